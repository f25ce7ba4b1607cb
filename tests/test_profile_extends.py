"""``extends:`` (issue 14): a site profile inherits a shipped profile or a file and lists only
what differs; cycles and unknown parents are file:line problems; ``profile explain`` says per
row which file decided it; the hash covers the effective profile, the parent included."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.profiles.compiler import compile_profile
from gateway.profiles.loader import ProfileInvalid, load_profile, resolve_profile_path
from gateway.profiles.model import Action, ProfileOption

RESEARCH = str(resolve_profile_path("research"))

SITE = """\
extends: research
name: site
version: "2"
dicom:
  options:
    add: [retain_device_identity]
    remove: [clean_graphics]
  overrides:
    - attribute: (0008,0050)
      action: hash
      why: the site's registry wants a hash
  pixels:
    mode: all-text
    examine:
      modalities: [MR]
fhir:
  rules:
    - path: Patient.photo
      method: keep
      why: the site's photos are of lesions
linkage:
  dates:
    range_days: 30
  identity:
    namespaces:
      - name: site-mrn
        fhir_systems: [urn:oid:1.2.3.4]
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _line(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, start=1) if needle in line)


def _problems(name: str | Path) -> list[str]:
    with pytest.raises(ProfileInvalid) as info:
        compile_profile(name)
    return [str(p) for p in info.value.problems]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- the merge
def test_site_profile_lists_only_what_differs(tmp_path: Path) -> None:
    site = compile_profile(_write(tmp_path / "site.yaml", SITE)).profile
    research = load_profile("research")
    options = site.dicom.options
    assert ProfileOption.RETAIN_DEVICE_IDENTITY in options
    assert ProfileOption.CLEAN_GRAPHICS not in options
    assert set(options) == set(research.dicom.options) - {ProfileOption.CLEAN_GRAPHICS} | {
        ProfileOption.RETAIN_DEVICE_IDENTITY
    }
    # (0008,0050) is AccessionNumber: the child's override replaces the parent's, in place
    overrides = {o.attribute: o.action for o in site.dicom.overrides}
    assert overrides == {
        "PatientID": Action.PATIENT_PSEUDONYM,
        "PatientName": Action.PATIENT_PSEUDONYM,
        "(0008,0050)": Action.HASH,
    }
    # mappings merge key by key: the parent's pixel and linkage settings stay
    assert site.dicom.pixels.mode == "all-text"
    assert site.dicom.pixels.examine.policy == research.dicom.pixels.examine.policy
    assert site.dicom.pixels.examine.modalities == [*research.dicom.pixels.examine.modalities, "MR"]
    assert site.linkage.dates.range_days == 30
    assert site.linkage.dates.method == research.linkage.dates.method
    assert [n.name for n in site.linkage.identity.namespaces] == ["local-mrn", "site-mrn"]
    # FHIR: the child's rules first (they win); the parent's rule of the same target is gone
    assert site.fhir.rules[0].path == "Patient.photo" and site.fhir.rules[0].method.value == "keep"
    assert [r.path for r in site.fhir.rules].count("Patient.photo") == 1
    assert len(site.fhir.rules) == len(research.fhir.rules)
    assert site.fhir.free_text == research.fhir.free_text
    assert site.description == research.description


def test_defaults_of_the_parent_are_kept_when_a_list_is_added_to(tmp_path: Path) -> None:
    """basic sets no allow_list: adding one word keeps the default words."""
    text = 'extends: basic\nname: b2\nversion: "1"\nfhir:\n  free_text:\n    allow_list: [Ward]\n'
    profile = compile_profile(_write(tmp_path / "b2.yaml", text)).profile
    default = load_profile("basic").fhir.free_text.allow_list
    assert profile.fhir.free_text.allow_list == [*default, "Ward"]


def test_chain_of_files_relative_to_the_extending_one(tmp_path: Path) -> None:
    _write(tmp_path / "base" / "site.yaml", SITE)
    child = _write(
        tmp_path / "units" / "cardio.yaml",
        'extends: ../base/site.yaml\nname: cardio\nversion: "1"\n'
        "dicom:\n  overrides:\n    remove: [PatientName]\n",
    )
    compiled = compile_profile(child)
    profile = compiled.profile
    assert profile.name == "cardio"
    assert [o.attribute for o in profile.dicom.overrides] == ["PatientID", "(0008,0050)"]
    assert profile.dicom.pixels.mode == "all-text"  # from site.yaml
    source = compiled.source
    assert source.file_of(("dicom", "overrides", 0)) == RESEARCH
    assert Path(source.file_of(("dicom", "overrides", 1))).name == "site.yaml"
    assert source.line(("dicom", "overrides", 1)) == _line(
        tmp_path / "base" / "site.yaml", "(0008,0050)"
    )


def test_hash_covers_the_parent(tmp_path: Path) -> None:
    parent = _write(tmp_path / "parent.yaml", Path(RESEARCH).read_text(encoding="utf-8"))
    child = _write(tmp_path / "child.yaml", 'extends: parent.yaml\nname: child\nversion: "1"\n')
    before = compile_profile(child).profile.content_hash
    assert compile_profile(child).profile.content_hash == before  # stable
    parent.write_text(
        parent.read_text(encoding="utf-8").replace("range_days: 365", "range_days: 100"),
        encoding="utf-8",
    )
    after = compile_profile(child).profile
    assert after.linkage.dates.range_days == 100
    assert after.content_hash != before
    assert after.content_hash in after.method_description


# --------------------------------------------------------------------------- problems
def test_unknown_parent_is_a_problem_with_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.yaml", 'name: p\nversion: "1"\nextends: reserch\n')
    problems = _problems(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:3: extends: unknown profile 'reserch'")
    removal = _write(
        tmp_path / "r.yaml", SITE.replace("remove: [clean_graphics]", "remove: [retain_uids]")
    )
    problem = _problems(removal)[0]
    assert problem.startswith(f"{removal}:7: dicom.options.remove[0]: not in the parent's list")
    assert "allowed: retain_longitudinal_modified_dates, " in problem
    assert "research" in problems[0] and "safe-harbor" in problems[0]
    missing = _write(tmp_path / "q.yaml", 'name: q\nversion: "1"\nextends: ./nothere.yaml\n')
    assert _problems(missing)[0].startswith(f"{missing}:3: extends: unknown profile")


def test_cycle_is_a_problem_with_file_and_line(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", 'name: a\nversion: "1"\nextends: b.yaml\n')
    b = _write(tmp_path / "b.yaml", '# b\nextends: a.yaml\nname: b\nversion: "1"\n')
    problems = _problems(a)
    expected = (
        f"{b}:2: extends: extends cycle: a.yaml -> b.yaml -> a.yaml; allowed: a chain of "
        "extends that ends in a profile without one"
    )
    assert problems == [expected]
    itself = _write(tmp_path / "self.yaml", 'extends: self.yaml\nname: s\nversion: "1"\n')
    assert _problems(itself)[0].startswith(f"{itself}:1: extends: extends cycle")


def test_problems_point_at_the_file_that_has_them(tmp_path: Path) -> None:
    parent = _write(
        tmp_path / "parent.yaml",
        'name: parent\nversion: "1"\nfhir:\n  rules:\n    - path: Patinet.name\n      method: redact\n',
    )
    child = _write(
        tmp_path / "child.yaml",
        'extends: parent.yaml\nname: child\nversion: "1"\n'
        "dicom:\n  overrides:\n    - attribute: PatientID\n      action: age-cap\n"
        "  options:\n    remove: [clean_pixel_data]\n",
    )
    problems = _problems(child)
    assert any(p.startswith(f"{child}:9: dicom.options.remove[0]: not in the parent's list")
               for p in problems), problems  # fmt: skip
    child.write_text(child.read_text().replace("  options:\n    remove: [clean_pixel_data]\n", ""))
    problems = _problems(child)
    assert any(p.startswith(f"{parent}:5: fhir.rules[0].path") for p in problems), problems
    assert any(p.startswith(f"{child}:7: dicom.overrides[0].action: action age-cap needs")
               for p in problems), problems  # fmt: skip


def test_an_extending_profile_needs_its_own_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.yaml", "extends: research\n")
    problems = _problems(path)
    assert f"{path}:1: extends: an extending profile needs its own 'name'" in problems[0]
    assert any("'version'" in p for p in problems)


def test_validate_reports_the_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a.yaml", 'name: a\nversion: "1"\nextends: a.yaml\n')
    code, _, err = _run(["profile", "validate", str(a)], capsys)
    assert code == 1
    assert f"{a}:3: extends: extends cycle" in err
    code, _, err = _run(["profile", "explain", str(a)], capsys)
    assert code == 2 and f"{a}:3:" in err


# --------------------------------------------------------------------------- explain: from
def test_explain_shows_the_deciding_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _write(tmp_path / "site.yaml", SITE)
    code, out, err = _run(["profile", "explain", str(site), "--format", "json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["profile"] == "site"
    dicom = {r["keyword"]: r for r in data["rules"] if r["standard"] == "DICOM"}
    assert dicom["AccessionNumber"]["from"] == str(site)
    assert dicom["AccessionNumber"]["action"] == "hash"
    assert dicom["PatientID"]["from"] == RESEARCH
    assert dicom["StationName"]["from"] == str(site)  # Retain Device Identity, added by the site
    assert dicom["StationName"]["action"] == "keep"
    assert dicom["StudyDescription"]["from"] == RESEARCH  # Clean Descriptors, the parent's
    assert dicom["PatientAddress"]["from"] == "standard"  # Basic Profile X, no setting
    fhir = [r for r in data["rules"] if r["standard"] == "FHIR"]
    photo = next(r for r in fhir if r["tag"] == "Patient.photo")
    assert photo["from"] == str(site) and photo["action"] == "keep"
    assert next(r for r in fhir if r["tag"] == "Patient.contact")["from"] == RESEARCH
    assert {r["from"] for r in fhir if r["tag"] == "Patient.id"} == {"built-in"}

    code, out, _ = _run(["profile", "explain", str(site), "--format", "csv"], capsys)
    records = list(csv.DictReader(io.StringIO(out)))
    assert next(r for r in records if r["keyword"] == "AccessionNumber")["from"] == str(site)
    code, out, _ = _run(["profile", "explain", str(site)], capsys)
    line = next(line for line in out.splitlines() if "AccessionNumber" in line)
    assert "site.yaml" in line and "FROM" in out


def test_explain_of_a_shipped_profile_names_its_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["profile", "explain", "basic", "--format", "json"], capsys)
    assert code == 0
    froms = {r["from"] for r in json.loads(out)["rules"]}
    assert str(resolve_profile_path("basic")) in froms
    assert froms <= {str(resolve_profile_path("basic")), "standard", "built-in"}
