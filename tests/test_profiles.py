"""Profiles (issue 2): the bundled ones validate, broken ones get file:line errors, explain
lists every Table E.1-1 row with the action the standard + options + overrides give.

Expected actions are derived from the table's own codes (PS3.15 E.1-1) and the options each
profile declares, not copied from the program's output.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.dicom.rules import RuleSet
from gateway.dicom.standard import PRIVATE_PATTERN, TableRow, load_table
from gateway.errors import ConfigurationError
from gateway.profiles.loader import ProfileInvalid, available_profiles, load_profile, parse_profile
from gateway.profiles.model import Action, DateMethod, ProfileOption

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ["basic", "research", "safe-harbor"]
RESEARCH_YAML = (REPO / "profiles" / "research.yaml").read_text(encoding="utf-8")

CliResult = tuple[int, str, str]
Runner = Callable[[list[str]], CliResult]


def run_subprocess(args: list[str]) -> CliResult:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(params=["in-process", "subprocess"])
def cli(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Runner:
    """Run ``deid-gateway`` either through ``main([...])`` or ``python -m gateway.cli.main``."""

    def in_process(args: list[str]) -> CliResult:
        capsys.readouterr()
        try:
            code = main(args)
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return in_process if request.param == "in-process" else run_subprocess


@pytest.fixture
def cli_in_process(capsys: pytest.CaptureFixture[str]) -> Runner:
    def run(args: list[str]) -> CliResult:
        return run_main(args, capsys)

    return run


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> CliResult:
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- bundled profiles
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_profile_loads_and_compiles(name: str) -> None:
    assert name in available_profiles()
    profile = load_profile(name)
    assert profile.name == name
    RuleSet(profile)
    assert len(profile.method_description) <= 64  # DeidentificationMethod is LO


def test_bundled_profiles_validate_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    for name in BUNDLED:
        code, out, err = run_main(["profile", "validate", name], capsys)
        assert code == 0, err
        assert "valid" in out


def test_validate_in_a_subprocess() -> None:
    code, out, err = run_subprocess(["profile", "validate", "research"])
    assert code == 0, err
    assert "valid" in out


def test_bundled_profile_files_validate_by_path(capsys: pytest.CaptureFixture[str]) -> None:
    for name in BUNDLED:
        path = REPO / "profiles" / f"{name}.yaml"
        code, out, err = run_main(["profile", "validate", str(path)], capsys)
        assert code == 0, err
        assert out.startswith(f"{path}:")


def test_research_has_the_options_the_issue_names() -> None:
    options = set(load_profile("research").dicom.options)
    assert options == {
        ProfileOption.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        ProfileOption.RETAIN_PATIENT_CHARACTERISTICS,
        ProfileOption.CLEAN_DESCRIPTORS,
        ProfileOption.CLEAN_PIXEL_DATA,
        ProfileOption.CLEAN_GRAPHICS,
        ProfileOption.CLEAN_STRUCTURED_CONTENT,
    }
    assert load_profile("research").linkage.dates.method is DateMethod.SHIFT


def test_basic_has_no_options_and_safe_harbor_keeps_years() -> None:
    assert load_profile("basic").dicom.options == []
    safe_harbor = load_profile("safe-harbor")
    assert safe_harbor.linkage.dates.method is DateMethod.YEAR_ONLY
    assert safe_harbor.dicom.age_cap_years == 89


def test_profile_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["profile", "list"], capsys)
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(BUNDLED) <= listed


# --------------------------------------------------------------------------- broken profiles
def _line_of(text: str, needle: str) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(lines) == 1, needle
    return lines[0]


def _broken(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    assert RESEARCH_YAML.count(old) == 1, old
    text = RESEARCH_YAML.replace(old, new)
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    return path, _line_of(text, new.strip().splitlines()[-1].strip())


# (old text, new text, what the message must say is allowed or wrong)
BROKEN = {
    "typo-setting": ("  compound_actions: preserve", "  compound_action: preserve", ["unknown"]),
    "wrong-option": ("    - clean_graphics\n", "    - clean_graphic\n",
                     ["clean_graphics", "clean_descriptors"]),
    "bad-action": ("      action: accession-pseudonym", "      action: accession-pseudo",
                   ["accession-pseudonym", "keep", "remove"]),
    "bad-date-method": ("    method: shift ", "    method: shfit ", ["shift", "year-only"]),
    "bad-range": ("    range_days: 365 ", "    range_days: 0 ", ["range_days", "1"]),
    "yaml-syntax": ("  compound_actions: preserve-conformance",
                    "  compound_actions: preserve-conformance: oops", ["YAML"]),
}


@pytest.mark.parametrize(
    ("case", "runner"),
    [(case, "in-process") for case in BROKEN] + [("bad-action", "subprocess")],
)
def test_validate_broken_profile_points_at_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str, runner: str
) -> None:
    cli: Runner = run_subprocess if runner == "subprocess" else (lambda a: run_main(a, capsys))
    old, new, says = BROKEN[case]
    path, line = _broken(tmp_path, old, new)
    code, out, err = cli(["profile", "validate", str(path)])
    assert code == 1
    assert "valid (" not in out
    assert f"{path}:{line}:" in err, err
    prefix = f"{path}:{line}:"
    problem = next(ln for ln in err.splitlines() if ln.startswith(prefix))[len(prefix):]
    for word in says:
        assert word in problem, problem
    assert "Traceback" not in err


def test_unknown_setting_message_lists_the_allowed_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, line = _broken(tmp_path, *BROKEN["typo-setting"][:2])
    code, _, err = run_main(["profile", "validate", str(path)], capsys)
    assert code == 1
    problem = next(ln for ln in err.splitlines() if ln.startswith(f"{path}:{line}:"))
    assert "compound_actions" in problem


def test_unknown_override_attribute_points_at_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, line = _broken(tmp_path, "attribute: AccessionNumber", "attribute: AccesionNumber")
    code, _, err = run_main(["profile", "validate", str(path)], capsys)
    assert code == 1
    assert f"{path}:{line}:" in err


def test_unknown_override_attribute_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _broken(tmp_path, "attribute: AccessionNumber", "attribute: AccesionNumber")
    code, _, err = run_main(["profile", "validate", str(path)], capsys)
    assert code == 1
    assert str(path) in err


def test_several_problems_are_all_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = RESEARCH_YAML.replace("    method: shift ", "    method: shfit ").replace(
        "    - clean_graphics\n", "    - clean_graphic\n"
    )
    path = tmp_path / "two.yaml"
    path.write_text(text, encoding="utf-8")
    code, _, err = run_main(["profile", "validate", str(path)], capsys)
    assert code == 1
    assert f"{path}:{_line_of(text, 'method: shfit')}:" in err
    assert f"{path}:{_line_of(text, '- clean_graphic')}:" in err


def test_conflicting_date_options_rejected(cli_in_process: Runner, tmp_path: Path) -> None:
    cli = cli_in_process
    old = "    - retain_longitudinal_modified_dates\n"
    text = RESEARCH_YAML.replace(old, old + "    - retain_longitudinal_full_dates\n")
    path = tmp_path / "both-dates.yaml"
    path.write_text(text, encoding="utf-8")
    code, _, err = cli(["profile", "validate", str(path)])
    assert code == 1
    options_line = _line_of(text, "  options:")
    added_line = _line_of(text, "- retain_longitudinal_full_dates")
    assert f"{path}:{options_line}:" in err or f"{path}:{added_line}:" in err, err
    with pytest.raises(ProfileInvalid):
        parse_profile(text, str(path))


def test_option_listed_twice_rejected() -> None:
    old = "    - clean_descriptors\n"
    with pytest.raises(ProfileInvalid):
        parse_profile(RESEARCH_YAML.replace(old, old + old))


def test_not_a_mapping_rejected() -> None:
    with pytest.raises(ProfileInvalid):
        parse_profile("- just\n- a list\n")


def test_set_override_needs_a_value() -> None:
    text = RESEARCH_YAML.replace("      action: accession-pseudonym", "      action: set")
    with pytest.raises(ProfileInvalid):
        parse_profile(text)


def test_age_cap_without_cap_years_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = RESEARCH_YAML.replace("      action: accession-pseudonym", "      action: age-cap")
    with pytest.raises(ConfigurationError):
        RuleSet(parse_profile(text))
    path = tmp_path / "age.yaml"
    path.write_text(text, encoding="utf-8")
    code, _, _ = run_main(["profile", "validate", str(path)], capsys)
    assert code == 1


# --------------------------------------------------------------------------- explain
def _explain_json(cli: Runner, name: str) -> dict:
    code, out, err = cli(["profile", "explain", name, "--format", "json"])
    assert code == 0, err
    return json.loads(out)


def test_explain_research_lists_every_table_row(cli: Runner) -> None:
    table = load_table()
    data = _explain_json(cli, "research")
    assert data["profile"] == "research"
    assert data["table_edition"] == table.edition
    rules = data["rules"]
    table_tags = [r.tag for r in table.rows]
    listed = [r["tag"] for r in rules if r["tag"] in set(table_tags)]
    assert len(listed) == len(table.rows)
    assert sorted(listed) == sorted(table_tags)
    for rule in rules:
        assert rule["action"].strip(), rule
        assert rule["why"].strip(), rule


def test_explain_csv_and_table_formats(capsys: pytest.CaptureFixture[str]) -> None:
    import csv
    import io

    rows_in_table = len(load_table().rows)
    code, out, _ = run_main(["profile", "explain", "research", "--format", "csv"], capsys)
    assert code == 0
    records = list(csv.DictReader(io.StringIO(out)))
    assert {"tag", "keyword", "action", "why"} <= set(records[0])
    assert len([r for r in records if r["standard"] == "DICOM"]) >= rows_in_table
    code, out, _ = run_main(["profile", "explain", "research"], capsys)
    assert code == 0
    assert "(0008,0020)" in out and "StudyDate" in out


CODE_WORD = {"D": "dummy", "Z": "empty", "X": "remove", "K": "keep", "U": "uid", "C": "clean"}


def _expected(row: TableRow, options: set[str]) -> set[str]:
    """What PS3.15 says for ``row`` with ``options``, as the action words explain may show.

    An option's K retains, its C cleans; without an applicable option the Basic Profile code
    applies, and a compound code (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) under the bundled profiles'
    preserve-conformance policy is decided per instance by the IOD ("by IOD").
    """
    applied = {code for opt, code in row.options.items() if opt in options}
    if applied:
        return {CODE_WORD[c] for c in applied}
    if "/" in row.basic:
        return {"by"}
    return {CODE_WORD[row.basic]}


@pytest.mark.parametrize("name", BUNDLED)
def test_explain_matches_the_table_for_every_row(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    profile = load_profile(name)
    overridden = set()
    rules = RuleSet(profile)
    for override in profile.dicom.overrides:
        overridden.add(override.attribute)
    code, out, _ = run_main(["profile", "explain", name, "--format", "json"], capsys)
    assert code == 0
    by_tag = {r["tag"]: r for r in json.loads(out)["rules"]}
    options = {o.value for o in profile.dicom.options}
    checked = 0
    for row in load_table().rows:
        if row.keyword in overridden or row.tag in overridden:
            continue
        explained = by_tag[row.tag]
        word = explained["action"].split()[0]
        assert word in _expected(row, options), (row.tag, row.basic, row.options, explained)
        if not row.is_pattern and word == "by":
            assert rules.for_tag(row.tag_int, "").compound == row.basic
        elif not row.is_pattern:
            assert rules.for_tag(row.tag_int, "").action.value == word
        checked += 1
    assert checked > 600


@functools.cache
def _explain_rules(name: str) -> tuple[dict[str, str], ...]:
    """``deid-gateway profile explain NAME --format json`` run once per profile."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["profile", "explain", name, "--format", "json"])
    assert code == 0
    return tuple(json.loads(out.getvalue())["rules"])


def _explained(name: str, keyword: str) -> dict[str, str]:
    matches = [r for r in _explain_rules(name) if r["keyword"] == keyword]
    assert len(matches) == 1, keyword
    return matches[0]


def _row(keyword: str) -> TableRow:
    return next(r for r in load_table().rows if r.keyword == keyword)


def test_study_date_shifted_in_research_not_in_basic() -> None:
    row = _row("StudyDate")
    assert row.options.get(ProfileOption.RETAIN_LONGITUDINAL_MODIFIED_DATES.value) == "C"
    research = _explained("research", "StudyDate")
    assert "shift" in research["action"]
    assert "Modified Dates" in research["why"]
    basic = _explained("basic", "StudyDate")
    assert "shift" not in basic["action"]
    assert basic["action"] == CODE_WORD[row.basic]  # Basic Profile code for StudyDate
    assert "year-only" in _explained("safe-harbor", "StudyDate")["action"]


def test_patient_characteristics_kept_in_research() -> None:
    for keyword in ("PatientAge", "PatientSex", "PatientWeight", "PatientSize"):
        row = _row(keyword)
        assert row.options.get(ProfileOption.RETAIN_PATIENT_CHARACTERISTICS.value) == "K"
        assert _explained("research", keyword)["action"] == "keep"
        assert _explained("basic", keyword)["action"] != "keep"
    assert _explained("safe-harbor", "PatientAge")["action"] == "age-cap"


def test_descriptors_cleaned_in_research() -> None:
    for keyword in ("StudyDescription", "SeriesDescription", "ImageComments"):
        row = _row(keyword)
        assert row.options.get(ProfileOption.CLEAN_DESCRIPTORS.value) == "C"
        assert _explained("research", keyword)["action"] == "clean"
        assert _explained("basic", keyword)["action"] == "remove"  # basic code X


def test_private_attributes_removed(capsys: pytest.CaptureFixture[str]) -> None:
    rules = RuleSet(load_profile("research"))
    assert rules.for_tag(0x00091001, "LO").action is Action.REMOVE
    assert rules.for_tag(0x7FE10010, "LO").action is Action.REMOVE
    code, out, _ = run_main(["profile", "explain", "research", "--format", "json"], capsys)
    assert code == 0
    private = [r for r in json.loads(out)["rules"] if r["tag"] == PRIVATE_PATTERN]
    assert [r["action"] for r in private] == ["remove"]


def test_research_pseudonymises_the_linkage_attributes() -> None:
    rules = RuleSet(load_profile("research"))
    assert rules.for_tag(0x00100020, "LO").action is Action.PATIENT_PSEUDONYM  # PatientID
    assert rules.for_tag(0x00100010, "PN").action is Action.PATIENT_PSEUDONYM  # PatientName
    assert rules.for_tag(0x00080050, "SH").action is Action.ACCESSION_PSEUDONYM
    assert rules.for_tag(0x0020000D, "UI").action is Action.UID  # StudyInstanceUID: U


# --------------------------------------------------------------------------- overrides
OVERRIDES_YAML = """\
name: overrides
version: "1"
dicom:
  options: [retain_patient_characteristics]
  overrides:
    - attribute: PatientSex
      action: remove
      why: by keyword
    - attribute: (0010,1010)
      action: empty
      why: by tag with parentheses
    - attribute: "0010,1030"
      action: dummy
    - attribute: "00101020"
      action: set
      value: "0"
      why: by tag, eight hex digits
    - attribute: (0028,0010)
      action: remove
      why: a tag that is not in Table E.1-1
"""


def test_overrides_by_keyword_and_by_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = parse_profile(OVERRIDES_YAML)
    rules = RuleSet(profile)
    assert rules.for_tag(0x00100040, "CS").action is Action.REMOVE  # PatientSex
    assert rules.for_tag(0x00101010, "AS").action is Action.EMPTY  # PatientAge
    assert rules.for_tag(0x00101030, "DS").action is Action.DUMMY  # PatientWeight
    size = rules.for_tag(0x00101020, "DS")  # PatientSize
    assert size.action is Action.SET and size.value == "0"
    assert rules.for_tag(0x00280010, "US").action is Action.REMOVE  # Rows
    # Not overridden: Retain Patient Characteristics still applies to its other rows.
    overridden = {0x00100040, 0x00101010, 0x00101030, 0x00101020}
    kept = [
        r for r in load_table().rows
        if r.options.get(ProfileOption.RETAIN_PATIENT_CHARACTERISTICS.value) == "K"
        and not r.is_pattern and r.tag_int not in overridden
    ]
    assert kept
    for row in kept:
        assert rules.for_tag(row.tag_int, "").action is Action.KEEP, row.tag

    path = tmp_path / "overrides.yaml"
    path.write_text(OVERRIDES_YAML, encoding="utf-8")
    code, _, err = run_main(["profile", "validate", str(path)], capsys)
    assert code == 0, err
    code, out, _ = run_main(["profile", "explain", str(path), "--format", "json"], capsys)
    assert code == 0
    by_tag = {r["tag"]: r for r in json.loads(out)["rules"]}
    assert by_tag["(0010,0040)"]["action"] == "remove"
    assert by_tag["(0010,0040)"]["why"] == "by keyword"
    assert by_tag["(0010,1010)"]["action"] == "empty"
    assert by_tag["(0010,1030)"]["why"]  # a default reason when the profile gives none
    assert by_tag["(0028,0010)"]["action"] == "remove"
    assert by_tag["(0028,0010)"]["keyword"] == "Rows"


def test_a_folder_named_like_a_profile_does_not_hide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's first command leaves ./research (its --output); the next --profile research
    in that folder must still mean the bundled profile, not that folder."""
    from gateway.profiles.loader import resolve_profile_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "research").mkdir()
    assert resolve_profile_path("research").name == "research.yaml"
    assert resolve_profile_path("research").is_file()
    (tmp_path / "mine.yaml").write_text("x")
    assert resolve_profile_path("mine.yaml") == Path("mine.yaml")
    with pytest.raises(ConfigurationError, match="not found"):
        resolve_profile_path("sub/absent.yaml")
    with pytest.raises(ConfigurationError, match="unknown profile"):
        resolve_profile_path("no-such-profile")
