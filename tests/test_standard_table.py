"""The shipped PS3.15 Table E.1-1 (gateway/dicom/_standard) against the standard's own data.

The reference is the machine-readable table in ``../shared/reference/`` (innolitics'
dicom-standard extraction); the product never reads it at run time, so this test is what keeps
the shipped copy honest.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydicom.datadict import keyword_for_tag

from gateway.dicom.rules import Rule, RuleSet
from gateway.dicom.standard import PRIVATE_PATTERN, TABLE_PATH, load_table
from gateway.profiles.model import Action, CompoundPolicy, Profile, ProfileOption

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/ps3.15-table-e.1-1.json"
REPO = Path(__file__).resolve().parents[1]

# PS3.15 E.1-1 column -> the option it belongs to (Table E.1-1's column headings).
REFERENCE_COLUMNS = {
    "rtnSafePrivOpt": ProfileOption.RETAIN_SAFE_PRIVATE,
    "rtnUIDsOpt": ProfileOption.RETAIN_UIDS,
    "rtnDevIdOpt": ProfileOption.RETAIN_DEVICE_IDENTITY,
    "rtnInstIdOpt": ProfileOption.RETAIN_INSTITUTION_IDENTITY,
    "rtnPatCharsOpt": ProfileOption.RETAIN_PATIENT_CHARACTERISTICS,
    "rtnLongFullDatesOpt": ProfileOption.RETAIN_LONGITUDINAL_FULL_DATES,
    "rtnLongModifDatesOpt": ProfileOption.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    "cleanDescOpt": ProfileOption.CLEAN_DESCRIPTORS,
    "cleanStructContOpt": ProfileOption.CLEAN_STRUCTURED_CONTENT,
    "cleanGraphOpt": ProfileOption.CLEAN_GRAPHICS,
}
# PS3.15 E.1.1: the action codes of the Basic Profile column.
BASIC_CODES = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
# Option columns only retain (K) or clean (C).
OPTION_CODES = {"K", "C"}
TAG_RE = re.compile(r"^\([0-9A-FX]{4},[0-9A-FX]{4}\)$")


def _normalise_tag(tag: str) -> str:
    """Reference spelling -> shipped spelling; the private-attributes row becomes the pattern."""
    tag = tag.upper().replace(" ", "")
    if "GGGG" in tag and "ODD" in tag:
        return PRIVATE_PATTERN
    return tag


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, Any]]:
    if not REFERENCE.is_file():
        pytest.skip(f"reference table not present at {REFERENCE} (it lives outside the repo)")
    rows = json.loads(REFERENCE.read_text(encoding="utf-8"))
    by_tag: dict[str, dict[str, Any]] = {}
    for row in rows:
        tag = _normalise_tag(row["tag"])
        assert tag not in by_tag, f"reference lists {tag} twice"
        by_tag[tag] = row
    return by_tag


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    table = load_table()
    by_tag = {row.tag: row for row in table.rows}
    assert len(by_tag) == len(table.rows), "shipped table lists a tag twice"
    return by_tag


# --------------------------------------------------------------------------- cross-check
def test_same_set_of_tags(reference: dict[str, Any], shipped: dict[str, Any]) -> None:
    missing = sorted(set(reference) - set(shipped))
    extra = sorted(set(shipped) - set(reference))
    assert not missing, f"rows of the standard missing from the shipped table: {missing[:20]}"
    assert not extra, f"shipped rows that are not in the standard: {extra[:20]}"


def test_same_basic_profile_codes(reference: dict[str, Any], shipped: dict[str, Any]) -> None:
    wrong = {
        tag: (shipped[tag].basic, row["basicProfile"])
        for tag, row in reference.items()
        if tag in shipped and shipped[tag].basic != row["basicProfile"].strip()
    }
    assert not wrong


def test_same_option_codes(reference: dict[str, Any], shipped: dict[str, Any]) -> None:
    wrong = {}
    for tag, row in reference.items():
        if tag not in shipped:
            continue
        expected = {
            option.value: row[column].strip()
            for column, option in REFERENCE_COLUMNS.items()
            if row.get(column, "").strip()
        }
        if shipped[tag].options != expected:
            wrong[tag] = (shipped[tag].options, expected)
    assert not wrong


def test_reference_has_no_unknown_option_columns(reference: dict[str, Any]) -> None:
    known = set(REFERENCE_COLUMNS) | {"basicProfile", "id", "name", "stdCompIOD", "tag"}
    columns = {column for row in reference.values() for column in row}
    assert columns <= known, f"new columns in the reference: {sorted(columns - known)}"


def test_names_agree(reference: dict[str, Any], shipped: dict[str, Any]) -> None:
    def simple(name: str) -> str:
        return re.sub(r"[^a-z0-9]", "", name.split("(see")[0].lower())

    wrong = {
        tag: (shipped[tag].name, row["name"])
        for tag, row in reference.items()
        if tag in shipped and simple(shipped[tag].name) != simple(row["name"])
    }
    assert not wrong


def test_build_script_reproduces_the_shipped_table(reference: dict[str, Any]) -> None:
    """The shipped file is exactly what scripts/build_confidentiality_table.py makes."""
    spec = importlib.util.spec_from_file_location(
        "build_confidentiality_table", REPO / "scripts" / "build_confidentiality_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = json.loads(REFERENCE.read_text(encoding="utf-8"))
    rebuilt = module.convert(rows)
    assert rebuilt == json.loads(TABLE_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- table on its own
def test_table_notes_its_edition_and_source() -> None:
    data = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    assert re.fullmatch(r"20\d\d[a-e]", data["edition"])
    assert "PS3.15" in data["source"]
    assert load_table().edition == data["edition"]


def test_table_size_is_the_current_edition() -> None:
    # Issue 2: "current edition, ~620 attributes".
    assert 600 <= len(load_table().rows) <= 700


def test_every_tag_is_well_formed(shipped: dict[str, Any]) -> None:
    for tag, row in shipped.items():
        if tag == PRIVATE_PATTERN:
            assert row.is_pattern
            continue
        assert TAG_RE.fullmatch(tag), tag
        assert row.is_pattern == ("X" in tag), tag


def test_every_action_code_is_a_ps315_code(shipped: dict[str, Any]) -> None:
    for tag, row in shipped.items():
        assert row.basic in BASIC_CODES, (tag, row.basic)
        for option, code in row.options.items():
            assert code in OPTION_CODES, (tag, option, code)
            assert option in {o.value for o in ProfileOption}, (tag, option)


def test_every_code_of_the_standard_is_used(shipped: dict[str, Any]) -> None:
    """Issue 2 names every code; the current table uses all but a bare K / C basic code."""
    used = {row.basic for row in shipped.values()}
    assert BASIC_CODES - {"K", "C"} <= used


def test_keywords_agree_with_pydicom(shipped: dict[str, Any]) -> None:
    wrong = {}
    for tag, row in shipped.items():
        if row.is_pattern:
            continue
        known = keyword_for_tag(row.tag_int)
        if known and row.keyword != known:
            wrong[tag] = (row.keyword, known)
    assert not wrong


def test_well_known_rows() -> None:
    """A few rows every reader of PS3.15 knows (E.1-1, Basic Profile column)."""
    by_keyword = {r.keyword: r for r in load_table().rows if r.keyword}
    assert by_keyword["PatientName"].basic == "Z"
    assert by_keyword["PatientID"].basic in ("Z", "Z/D")  # later editions allow a dummy
    assert by_keyword["SOPInstanceUID"].basic == "U"
    assert by_keyword["StudyInstanceUID"].basic == "U"
    assert by_keyword["PatientAddress"].basic == "X"
    assert by_keyword["StudyDescription"].options == {"clean_descriptors": "C"}
    assert by_keyword["PatientAge"].options.get("retain_patient_characteristics") == "K"
    assert "SOPClassUID" not in by_keyword  # never de-identified
    assert "Modality" not in by_keyword


# --------------------------------------------------------------------------- RuleSet coverage
SINGLE_OPTIONS: list[ProfileOption | None] = [None, *ProfileOption]


def _profile(option: ProfileOption | None, policy: CompoundPolicy) -> Profile:
    return Profile.model_validate(
        {
            "name": "single",
            "version": "1",
            "dicom": {
                "options": [option.value] if option else [],
                "compound_actions": policy.value,
            },
        }
    )


def _rule_for(rules: RuleSet, tag: str) -> Rule:
    if tag == PRIVATE_PATTERN:
        return rules.for_tag(0x00091010, "LO")
    if tag.startswith("(50XX"):
        return rules.for_tag(0x50000010, "US")
    if tag.startswith("(60XX"):
        return rules.for_tag(0x60000000 | int(tag[6:10], 16), "")
    return rules.for_tag(int(tag[1:5] + tag[6:10], 16), "")


@pytest.mark.parametrize("policy", list(CompoundPolicy), ids=lambda p: p.value)
@pytest.mark.parametrize("option", SINGLE_OPTIONS, ids=lambda o: o.value if o else "none")
def test_ruleset_resolves_every_row(option: ProfileOption | None, policy: CompoundPolicy) -> None:
    rules = RuleSet(_profile(option, policy))
    explained = {r["tag"]: r for r in rules.explain()}
    for row in load_table().rows:
        rule = _rule_for(rules, row.tag)
        assert isinstance(rule.action, Action)
        assert rule.why
        assert explained[row.tag]["action"]
        code = row.options.get(option.value) if option else None
        if code == "K":
            assert rule.action is Action.KEEP, (row.tag, option)
        elif code == "C":
            assert rule.action is Action.CLEAN, (row.tag, option)
        else:
            choices = row.basic.rstrip("*").split("/")
            chosen = {"K": Action.KEEP, "X": Action.REMOVE, "Z": Action.EMPTY, "D": Action.DUMMY,
                      "C": Action.CLEAN, "U": Action.UID}
            assert rule.action in {chosen[c.rstrip("*")] for c in choices}, (row.tag, row.basic)
            if len(choices) > 1:
                # remove-when-allowed takes X when offered; preserve-conformance the last choice.
                want = choices[0] if policy is CompoundPolicy.REMOVE_WHEN_ALLOWED else choices[-1]
                assert rule.action is chosen[want.rstrip("*")], (row.tag, row.basic, policy)
