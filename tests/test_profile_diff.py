"""``deid-gateway profile diff OLD NEW`` (issue 14): every effective action that differs.

Expected DICOM actions come from PS3.15 Table E.1-1's own codes (``gateway.dicom.standard``),
not from the program's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.dicom.standard import load_table
from gateway.profiles.compiler import compile_profile
from gateway.profiles.diff import Difference, diff_profiles, flatten

CODE_WORD = {"X": "remove", "Z": "empty", "D": "dummy", "K": "keep", "U": "uid"}


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _by_key(rows: list[Difference]) -> dict[str, Difference]:
    return {r.key: r for r in rows}


def _basic_code(keyword: str) -> str:
    return next(r.basic for r in load_table().rows if r.keyword == keyword)


@pytest.fixture(scope="module")
def research_vs_basic() -> dict[str, Difference]:
    return _by_key(diff_profiles(compile_profile("research"), compile_profile("basic")))


def test_research_vs_basic_lists_known_tags(research_vs_basic: dict[str, Difference]) -> None:
    rows = research_vs_basic
    study_date = rows["(0008,0020)"]
    assert study_date.kind == "DICOM" and study_date.name == "StudyDate"
    assert study_date.old == "clean -> shift-date"  # Modified Dates, shift
    assert study_date.new == CODE_WORD[_basic_code("StudyDate")]
    assert "Modified Dates" in study_date.old_why
    assert study_date.new_why == f"Basic Profile: {_basic_code('StudyDate')}"
    accession = rows["(0008,0050)"]  # research's override, basic's table code
    assert accession.old == "accession-pseudonym"
    assert accession.new == CODE_WORD[_basic_code("AccessionNumber")]
    assert accession.old_why == "joins the study to its FHIR ServiceRequest / ImagingStudy"
    assert rows["(0010,1010)"].old == "keep"  # PatientAge: Retain Patient Characteristics
    assert rows["(0010,1010)"].new == CODE_WORD[_basic_code("PatientAge")]
    assert rows["(0008,1030)"].old == "clean"  # StudyDescription: Clean Descriptors
    assert "(0010,0020)" not in rows  # PatientID: patient-pseudonym in both
    assert "(0010,0010)" not in rows  # PatientName too


def test_research_vs_basic_fhir_and_settings(research_vs_basic: dict[str, Difference]) -> None:
    rows = research_vs_basic
    assert rows["type HumanName"].kind == "FHIR"
    assert (rows["type HumanName"].old, rows["type HumanName"].new) == ("redact", None)
    assert rows["type Narrative"].old == "clean" and rows["type Narrative"].new == "redact"
    assert rows["type Narrative"].new_why == "Basic removes free text (narrative is optional)"
    assert "Patient.photo" not in rows  # redact in both
    assert (rows["fhir.free_text.nlp"].old, rows["fhir.free_text.nlp"].new) == ("true", "false")
    assert "clean_pixel_data" in (rows["dicom.options"].old or "")
    assert rows["dicom.options"].new == ""
    assert "linkage.dates.range_days" not in rows  # 365 in both


def test_same_profile_has_no_differences(capsys: pytest.CaptureFixture[str]) -> None:
    assert diff_profiles(compile_profile("basic"), compile_profile("basic")) == []
    code, out, _ = _run(["profile", "diff", "basic", "basic"], capsys)
    assert code == 0
    assert "# 0 difference(s)" in out


def test_site_profile_against_its_parent(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        'extends: research\nname: site\nversion: "1"\n'
        "dicom:\n  overrides:\n    - attribute: AccessionNumber\n      action: remove\n"
        "      why: not needed\n  pixels:\n    mode: all-text\n"
        "linkage:\n  dates:\n    method: year-only\n",
        encoding="utf-8",
    )
    rows = diff_profiles(compile_profile("research"), compile_profile(site))
    by_key = _by_key(rows)
    assert by_key["(0008,0050)"].old == "accession-pseudonym"
    assert by_key["(0008,0050)"].new == "remove" and by_key["(0008,0050)"].new_why == "not needed"
    assert (by_key["dicom.pixels.mode"].old, by_key["dicom.pixels.mode"].new) == (
        "sensitive-only",
        "all-text",
    )
    assert by_key["linkage.dates.method"].new == "year-only"
    # the date method changes every shifted date, DICOM and FHIR alike
    assert by_key["(0008,0020)"].new == "clean -> year-only"
    assert by_key["type dateTime"].new == "dateShift (year only)"
    settings = {r.key for r in rows if r.kind == "setting"}
    assert settings == {"name", "version", "dicom.pixels.mode", "linkage.dates.method"}


def test_json_format_parses(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        ["profile", "diff", "research", "safe-harbor", "--format", "json"], capsys
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["old"]["profile"] == "research" and data["new"]["profile"] == "safe-harbor"
    assert data["old"]["hash"] == compile_profile("research").profile.content_hash
    rows = {r["key"]: r for r in data["differences"]}
    assert set(next(iter(rows.values()))) == {
        "kind", "key", "name", "old", "new", "old_why", "new_why",
    }  # fmt: skip
    assert rows["(0010,1010)"]["new"] == "age-cap"  # PatientAge: Safe Harbor's override
    assert rows["type Address"]["old"] == "generalize (state)"
    assert rows["type Address"]["new"] == "generalize (zip3)"
    assert rows["dicom.age_cap_years"] == {
        "kind": "setting", "key": "dicom.age_cap_years", "name": "", "old": "null", "new": "89",
        "old_why": "", "new_why": "",
    }  # fmt: skip


def test_table_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["profile", "diff", "research", "basic"], capsys)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("DICOM    (0008,0050)"))
    assert "AccessionNumber" in line and "accession-pseudonym" in line and "empty" in line
    assert "old: joins the study to its FHIR ServiceRequest / ImagingStudy" in out
    assert out.startswith("# old: deid-gateway research v1.0 #")


def test_a_bad_profile_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('name: bad\nversion: "1"\ndicom:\n  overides: []\n', encoding="utf-8")
    code, out, err = _run(["profile", "diff", "research", str(bad)], capsys)
    assert code == 2 and out == ""
    assert f"{bad}:4: dicom.overides: unknown setting" in err
    code, _, err = _run(["profile", "diff", "nosuch", "basic"], capsys)
    assert code == 2 and "unknown profile 'nosuch'" in err


def test_flatten_keys_lists_of_entries_as_extends_does() -> None:
    flat = flatten({"linkage": {"identity": {"namespaces": [{"name": "a"}, {"name": "b"}]}},
                    "dicom": {"options": ["b", "a"], "overrides": [{"attribute": "x"}]}})  # fmt: skip
    assert flat == {
        "linkage.identity.namespaces[a]": '{"name": "a"}',
        "linkage.identity.namespaces[b]": '{"name": "b"}',
        "dicom.options": "a, b",
    }
