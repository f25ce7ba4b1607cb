"""The cohort file (CSV or FHIR Group): what is read, and what is refused with a message that
names the file and the row but never a value (an MRN is PHI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.cli.main import main
from gateway.intake.pull.cohort import CohortEntry, CohortInvalid, parse_cohort
from gateway.intake.pull.export import ExportRequest, parse_modalities
from gateway.intake.pull.pacs import StudyFilter, matches

SECRET = "MRN8812731"


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("mrn\nA1\nA2\n", [CohortEntry(1, mrn="A1"), CohortEntry(2, mrn="A2")]),
        ("MRN , Issuer\nA1,HOSP\n", [CohortEntry(1, mrn="A1", issuer="HOSP")]),
        ("mrn,accession,study_uid\n,ACC1,\n,,1.2.3\n",
         [CohortEntry(1, accession="ACC1"), CohortEntry(2, study_uid="1.2.3")]),
        ("\ufeffmrn\nA1\n\n,\nA3\n", [CohortEntry(1, mrn="A1"), CohortEntry(4, mrn="A3")]),
    ],
)  # fmt: skip
def test_csv_entries_are_read_by_row_number(text: str, entries: list[CohortEntry]) -> None:
    assert list(parse_cohort(text.encode()).entries) == entries


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{SECRET}\n{SECRET}2\n", "line 1 must be a header"),
        (f"mrn,name\n{SECRET},X\n", "line 1 must be a header"),
        ("issuer\nHOSP\n", "at least one of mrn"),
        ("mrn,mrn\nA,B\n", "named twice"),
        (f"mrn,issuer\n{SECRET}\n", "row 1 has 1 cells"),
        (f"mrn,issuer\n{SECRET},X\n,HOSP\n", "row 2 has no mrn"),
        ("mrn\n", "no entries"),
        ("", "empty file"),
        ('{"resourceType": "Patient"}', "must be a FHIR Group"),
        ('{"resourceType": "Group", "member": [{"entity": {"display": "' + SECRET + '"}}]}',
         "Group.member 1 names no Patient"),
        ("{not json", "not valid JSON"),
    ],
)  # fmt: skip
def test_bad_cohort_files_are_refused_naming_file_and_row_never_a_value(
    text: str, message: str
) -> None:
    with pytest.raises(CohortInvalid) as caught:
        parse_cohort(text.encode(), "cohort.csv")
    assert message in caught.value.detail and "cohort.csv" in caught.value.detail
    assert SECRET not in str(caught.value)
    assert caught.value.reason.value == "cohort-invalid"


def test_a_fhir_group_names_patients_by_identifier_or_reference() -> None:
    group = {"resourceType": "Group", "type": "person", "actual": True, "member": [
        {"entity": {"identifier": {"system": "urn:mrn", "value": "A1"}}},
        {"entity": {"reference": "Patient/p-2"}},
        {"entity": {"reference": "Patient/p-3"}, "inactive": True},
    ]}  # fmt: skip
    cohort = parse_cohort(json.dumps(group).encode())
    assert list(cohort.entries) == [
        CohortEntry(1, mrn="A1", system="urn:mrn"),
        CohortEntry(2, patient_ref="Patient/p-2"),
    ]


def test_the_export_id_is_the_cohort_destination_and_filters() -> None:
    cohort = parse_cohort(b"mrn\nA1\n")
    same = ExportRequest("default", parse_cohort(b"mrn\nA1\n"))
    assert ExportRequest("default", cohort).export_id == same.export_id
    assert ExportRequest("other", cohort).export_id != same.export_id
    ct = StudyFilter(modalities=parse_modalities("ct, MR"))
    assert ct.modalities == {"CT", "MR"} and ct.wants("mr") and not ct.wants("US")
    assert ExportRequest("default", cohort, ct).export_id != same.export_id


@pytest.mark.parametrize(
    ("entry", "found", "wanted"),
    [
        (CohortEntry(1, mrn="A1"), ("A1", None, "X", "1.2"), True),
        (CohortEntry(1, mrn="A1"), ("A10", None, "X", "1.2"), False),  # a loose PACS match
        (CohortEntry(1, mrn="A1", issuer="H"), ("A1", "OTHER", "X", "1.2"), False),
        (CohortEntry(1, accession="X"), ("B7", None, "X", "1.2"), True),
        (CohortEntry(1, mrn="A1", accession="X"), ("A1", None, "Y", "1.2"), False),
    ],
)  # fmt: skip
def test_only_studies_that_really_are_the_entrys_are_fetched(
    entry: CohortEntry, found: tuple[str, str | None, str, str], wanted: bool
) -> None:
    assert matches(entry, *found) is wanted


def test_study_date_range() -> None:
    import datetime as dt

    assert StudyFilter().date_range is None
    assert StudyFilter(since=dt.date(2024, 1, 2)).date_range == "20240102-"
    assert StudyFilter(dt.date(2024, 1, 2), dt.date(2024, 3, 4)).date_range == "20240102-20240304"


def _config(tmp_path: Path, sources: dict[str, object]) -> Path:
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "sources": sources}))
    return config


EHR = {"ehr": {"type": "fhir", "url": "http://127.0.0.1:9/fhir"}}


@pytest.mark.parametrize(
    ("cohort", "sources", "message"),
    [
        (f"mrn,name\n{SECRET},X\n", EHR, "cohort.csv: line 1 must be a header"),
        (f"mrn,issuer\n{SECRET}\n", EHR, "cohort.csv: row 1 has 1 cells"),
        ("mrn\nA1\n", {}, "needs sources.pacs and/or sources.ehr"),
        (None, EHR, "cannot read"),
    ],
)  # fmt: skip
def test_export_cli_usage_errors_exit_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cohort: str | None,
    sources: dict[str, object], message: str,
) -> None:  # fmt: skip
    path = tmp_path / "cohort.csv"
    if cohort is not None:
        path.write_text(cohort)
    code = main(["export", "--config", str(_config(tmp_path, sources)), "--cohort", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert SECRET not in err and "Traceback" not in err


def test_export_help_names_the_options() -> None:
    from gateway.cli.main import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["export"].format_help()  # type: ignore[union-attr]
    for option in ("--config", "--destination", "--cohort", "--since", "--until", "--modalities"):
        assert option in text
