"""The batch entry point: classification, two-pass patient order, NDJSON streaming, quarantine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.fhir.batch import is_ndjson, looks_like_fhir, run_fhir_batch
from tests.fhir_fixtures import (
    MRN_SYSTEM,
    LinkedStudy,
    linkage_for,
    linked_bundle,
    linked_dicom,
    profile_with,
    read_ndjson_dir,
)

PATIENT = {
    "resourceType": "Patient", "id": "p9",
    "identifier": [{"system": MRN_SYSTEM, "value": "MRN-909"}],
    "name": [{"family": "Vandersloot", "given": ["Imelda"]}],
}  # fmt: skip


def _obs(i: int, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/p9"},
            "effectiveDateTime": "2022-06-01", **extra}  # fmt: skip


def _run(paths: list[Path], tmp_path: Path, **fhir: Any) -> Any:
    profile = profile_with("research", free_text={"nlp": False}, **fhir)
    return run_fhir_batch(paths, tmp_path / "out", tmp_path / "q", profile, linkage_for(profile))


def _write_ndjson(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_looks_like_fhir(tmp_path: Path) -> None:
    resource = tmp_path / "a.json"
    resource.write_text(json.dumps({"resourceType": "Patient"}, indent=2))
    bundle = tmp_path / "b.json"
    bundle.write_text(json.dumps(linked_bundle(LinkedStudy())))
    ndjson = _write_ndjson(tmp_path / "c.ndjson", [_obs(1), _obs(2)])
    other_json = tmp_path / "d.json"
    other_json.write_text('{"hello": "world"}')
    dicom = linked_dicom(LinkedStudy(), tmp_path / "e.dcm")
    empty = tmp_path / "f.json"
    empty.write_text("")
    assert [looks_like_fhir(p) for p in (resource, bundle, ndjson)] == [True, True, True]
    assert [looks_like_fhir(p) for p in (other_json, dicom, empty)] == [False, False, False]
    assert is_ndjson(ndjson) and not is_ndjson(bundle) and not is_ndjson(resource)
    unnamed = _write_ndjson(tmp_path / "export.txt", [_obs(1), _obs(2)])
    assert is_ndjson(unnamed)


def test_patient_after_its_observations_still_links(tmp_path: Path) -> None:
    first = _write_ndjson(tmp_path / "Observation.ndjson", [_obs(1), _obs(2)])
    second = _write_ndjson(tmp_path / "Patient.ndjson", [PATIENT])
    summary = _run([first, second], tmp_path)
    assert summary.processed == 3 and summary.quarantined == 0
    out = read_ndjson_dir(tmp_path / "out" / "fhir")
    profile = profile_with("research", free_text={"nlp": False})
    linkage = linkage_for(profile)
    person = linkage.person(linkage.identity.from_dicom("MRN-909", None))
    import datetime as dt

    for obs in (r for r in out if r["resourceType"] == "Observation"):
        assert obs["subject"]["reference"] == f"Patient/{person.patient_id}"
        delta = dt.date.fromisoformat(obs["effectiveDateTime"]) - dt.date(2022, 6, 1)
        assert delta.days == person.date_offset_days
    assert sorted(p.name for p in (tmp_path / "out" / "fhir").iterdir()) == [
        "Observation.ndjson", "Patient.ndjson"]  # fmt: skip


def test_bad_ndjson_lines_are_quarantined_and_the_rest_delivered(tmp_path: Path) -> None:
    rows: list[Any] = [
        PATIENT,
        _obs(1),
        "{not json",
        _obs(2, colour="red"),
        {"no": "type"},
        _obs(3),
    ]
    source = _write_ndjson(tmp_path / "mixed.ndjson", rows)
    summary = _run([source], tmp_path)
    assert summary.processed == 3
    assert summary.quarantined == 3
    assert [r.line for r in summary.quarantine] == [3, 4, 5]
    assert {r.reason.value for r in summary.quarantine} == {"fhir-invalid", "not-fhir"}
    quarantined = (tmp_path / "q" / "mixed.ndjson").read_text().splitlines()
    assert len(quarantined) == 3
    reason = json.loads((tmp_path / "q" / "mixed.ndjson.reason.json").read_text())
    assert [r["line"] for r in reason["records"]] == [3, 4, 5]
    assert all(
        r["operationOutcome"]["resourceType"] == "OperationOutcome" for r in reason["records"]
    )
    assert "red" not in json.dumps(reason)


def test_invalid_bundle_is_quarantined_whole(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(linked_bundle(LinkedStudy())))
    bad_bundle = linked_bundle(LinkedStudy())
    bad_bundle["entry"][1]["resource"]["authoredOn"] = "not a date"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_bundle))
    broken = tmp_path / "broken.json"
    broken.write_text('{"resourceType": "Patient", ')
    summary = _run([bad, good, broken], tmp_path)
    assert summary.processed == 5
    assert [(Path(r.file).name, r.reason.value) for r in summary.quarantine] == [
        ("bad.json", "fhir-invalid"), ("broken.json", "fhir-invalid")]  # fmt: skip
    assert (tmp_path / "q" / "bad.json").read_bytes() == bad.read_bytes()
    assert (tmp_path / "q" / "bad.json.reason.json").is_file()
    assert "not a date" not in (tmp_path / "q" / "bad.json.reason.json").read_text()


def test_output_that_does_not_validate_is_quarantined(tmp_path: Path) -> None:
    # Observation.status is required; a rule removing it makes the output invalid
    profile = profile_with("research", free_text={"nlp": False})
    from gateway.profiles.fhir_model import FhirRule

    rules = [FhirRule.model_validate({"path": "Observation.status", "method": "redact"})]
    profile = profile.model_copy(update={"fhir": profile.fhir.model_copy(update={"rules": rules})})
    source = _write_ndjson(tmp_path / "o.ndjson", [_obs(1)])
    summary = run_fhir_batch(
        [source], tmp_path / "out", tmp_path / "q", profile, linkage_for(profile)
    )
    assert summary.processed == 0 and summary.quarantined == 1
    assert "Observation.status" in summary.quarantine[0].detail


def test_output_appends_and_progress_counts(tmp_path: Path) -> None:
    source = _write_ndjson(tmp_path / "p.ndjson", [PATIENT, _obs(1)])
    seen: list[int] = []
    profile = profile_with("research", free_text={"nlp": False})
    for _ in range(2):
        run_fhir_batch(
            [source], tmp_path / "out", tmp_path / "q", profile, linkage_for(profile), seen.append
        )
    lines = (tmp_path / "out" / "fhir" / "Observation.ndjson").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]  # deterministic, appended
    assert sum(seen) == 2  # one call per input file


def test_text_spans_reported_by_entity(tmp_path: Path) -> None:
    obs = _obs(1, note=[{"text": "Imelda Vandersloot called from 555-123-4567 on 03/04/2022"}])
    source = _write_ndjson(tmp_path / "n.ndjson", [PATIENT, obs])
    summary = _run([source], tmp_path)
    assert summary.spans.get("PERSON", 0) >= 1
    assert summary.spans.get("PHONE_NUMBER", 0) + summary.spans.get("ID", 0) >= 1
    assert summary.spans.get("DATE_TIME", 0) >= 1
    out = (tmp_path / "out" / "fhir" / "Observation.ndjson").read_text()
    assert "Vandersloot" not in out and "555-123-4567" not in out


@pytest.mark.parametrize("name", ["research", "safe-harbor", "basic"])
def test_summary_is_serialisable(tmp_path: Path, name: str) -> None:
    source = _write_ndjson(tmp_path / "p.ndjson", [PATIENT, "{"])
    profile = profile_with(name, free_text={"nlp": False})
    summary = run_fhir_batch(
        [source], tmp_path / "out", tmp_path / "q", profile, linkage_for(profile)
    )
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["processed"] == 1 and data["quarantine_by_reason"] == {"fhir-invalid": 1}


def test_provenance_names_the_profile(tmp_path: Path) -> None:
    from gateway.fhir.validation import validation_issues
    from gateway.profiles.fhir_model import FhirVersion

    source = _write_ndjson(tmp_path / "p.ndjson", [PATIENT, _obs(1)])
    summary = _run([source], tmp_path, provenance=True)
    assert summary.by_type["Provenance"] == 1
    provs = [
        r for r in read_ndjson_dir(tmp_path / "out" / "fhir") if r["resourceType"] == "Provenance"
    ]
    patient = next(
        r for r in read_ndjson_dir(tmp_path / "out" / "fhir") if r["resourceType"] == "Patient"
    )
    profile = profile_with("research", free_text={"nlp": False}, provenance=True)
    assert provs[0]["target"] == [{"reference": f"Patient/{patient['id']}"}]
    assert profile.content_hash in provs[0]["policy"][0]
    assert validation_issues(provs[0], FhirVersion.R4) == []


def test_identifiers_seen_only_in_dicom_headers_are_scrubbed(tmp_path: Path) -> None:
    from gateway.text.context import PhiContext

    profile = profile_with("research", free_text={"nlp": False})
    linkage = linkage_for(profile)
    header = PhiContext()
    header.add_name("HOLLOWAY^MARGARETHE")  # PatientName as the DICOM header has it
    header.add_identifier("ACC20240917")
    person = linkage.identity.from_dicom("MRN-909", None)
    obs = _obs(1, note=[{"text": "Margarethe Holloway, accession ACC20240917, stable."}])
    source = _write_ndjson(tmp_path / "n.ndjson", [PATIENT, obs])
    run_fhir_batch(
        [source], tmp_path / "out", tmp_path / "q", profile, linkage, linked_phi=[(person, header)]
    )
    out = (tmp_path / "out" / "fhir" / "Observation.ndjson").read_text()
    assert "Holloway" not in out and "Margarethe" not in out and "ACC20240917" not in out
    assert "stable" in out


def test_quarantine_detail_says_where_not_what(tmp_path: Path) -> None:
    source = _write_ndjson(
        tmp_path / "w.ndjson", [_obs(1, effectiveDateTime="Smith 12"), _obs(2, colour="Smith")]
    )
    summary = _run([source], tmp_path)
    details = [r.detail for r in summary.quarantine]
    assert details[0].endswith("at Observation.effectiveDateTime")
    assert details[1].endswith("at Observation")
    assert not any("Smith" in d or "colour" in d for d in details)
