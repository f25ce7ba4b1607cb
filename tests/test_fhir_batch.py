"""The directory intake on FHIR: classification, two-pass patient order, NDJSON line by line,
quarantine in the one record format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.fhir.sniff import is_ndjson, looks_like_fhir
from gateway.intake.directory import RunConfig, RunSummary, run_directory
from gateway.pipeline.quarantine import read_record
from gateway.profiles.model import Profile
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


class _Summary:
    """The parts of a run's outcomes these tests look at."""

    def __init__(self, run: RunSummary) -> None:
        self.run = run
        self.processed = run.fhir_resources
        self.quarantine = run.quarantined
        self.quarantined = len(run.quarantined)
        self.spans = run.text_counts()

    def lines(self) -> list[int]:
        return [int(q.source.rsplit(":", 1)[1]) for q in self.quarantine]

    def reasons(self) -> list[str]:
        return [q.outcome.reason.value for q in self.quarantine if q.outcome.reason]

    def details(self) -> list[str]:
        return [q.outcome.detail for q in self.quarantine]


def _run_profile(
    paths: list[Path], tmp_path: Path, profile: Profile, seen: list[int] | None = None
) -> _Summary:
    config = RunConfig(profile, tmp_path / "out", tmp_path / "q", None)
    linkage_for(profile)  # the key the fixtures use, in the environment
    return _Summary(run_directory(paths, config, 1, seen.append if seen is not None else None))


def _run(paths: list[Path], tmp_path: Path, **fhir: Any) -> _Summary:
    return _run_profile(paths, tmp_path, profile_with("research", free_text={"nlp": False}, **fhir))


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
    # the folder store's layout: fhir/<Type>/<part>.ndjson, names without PHI
    assert sorted(p.name for p in (tmp_path / "out" / "fhir").iterdir()) == [
        "Observation", "Patient"]  # fmt: skip


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
    assert summary.lines() == [3, 4, 5]
    assert set(summary.reasons()) == {"fhir-invalid", "not-fhir"}
    # one quarantined payload per bad line, each with its record beside it
    kept = sorted(Path(str(q.quarantined_as)) for q in summary.quarantine)
    assert [p.read_bytes().decode().strip() != "" for p in kept] == [True] * 3
    records = [read_record(p) for p in kept]
    assert {r["source"].rsplit(":", 1)[1] for r in records} == {"3", "4", "5"}
    invalid = [r for r in records if r["source"].endswith(":4")]
    assert invalid[0]["operationOutcome"]["resourceType"] == "OperationOutcome"
    assert "red" not in json.dumps(records)


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
    assert [(Path(q.source).name, q.outcome.reason.value if q.outcome.reason else "")
            for q in summary.quarantine] == [
        ("bad.json", "fhir-invalid"), ("broken.json", "not-fhir")]  # fmt: skip
    kept = Path(str(summary.quarantine[0].quarantined_as))
    assert kept.name.endswith("-bad.json") and kept.read_bytes() == bad.read_bytes()
    assert "not a date" not in json.dumps(read_record(kept))


def test_output_that_does_not_validate_is_quarantined(tmp_path: Path) -> None:
    # Observation.status is required; a rule removing it makes the output invalid
    profile = profile_with("research", free_text={"nlp": False})
    from gateway.profiles.fhir_model import FhirRule

    rules = [FhirRule.model_validate({"path": "Observation.status", "method": "redact"})]
    profile = profile.model_copy(update={"fhir": profile.fhir.model_copy(update={"rules": rules})})
    source = _write_ndjson(tmp_path / "o.ndjson", [PATIENT, _obs(1)])
    summary = _run_profile([source], tmp_path, profile)
    assert summary.processed == 1 and summary.quarantined == 1
    assert "Observation.status" in summary.details()[0]


def test_rerun_replaces_identically_and_progress_counts(tmp_path: Path) -> None:
    source = _write_ndjson(tmp_path / "p.ndjson", [PATIENT, _obs(1)])
    seen: list[int] = []
    profile = profile_with("research", free_text={"nlp": False})
    outputs = []
    for _ in range(2):
        _run_profile([source], tmp_path, profile, seen)
        (part,) = (tmp_path / "out" / "fhir" / "Observation").glob("*.ndjson")
        outputs.append(part.read_text())
    # deterministic ids name the part: a second run replaces it with the same bytes
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == 1
    assert sum(seen) == 2  # one call per input file


def test_text_spans_reported_by_entity(tmp_path: Path) -> None:
    obs = _obs(1, note=[{"text": "Imelda Vandersloot called from 555-123-4567 on 03/04/2022"}])
    source = _write_ndjson(tmp_path / "n.ndjson", [PATIENT, obs])
    summary = _run([source], tmp_path)
    assert summary.spans.get("PERSON", 0) >= 1
    assert summary.spans.get("PHONE_NUMBER", 0) + summary.spans.get("ID", 0) >= 1
    assert summary.spans.get("DATE_TIME", 0) >= 1
    out = json.dumps(read_ndjson_dir(tmp_path / "out" / "fhir"))
    assert "Vandersloot" not in out and "555-123-4567" not in out


@pytest.mark.parametrize("name", ["research", "safe-harbor", "basic"])
def test_summary_is_serialisable(tmp_path: Path, name: str) -> None:
    source = _write_ndjson(tmp_path / "p.ndjson", [PATIENT, "{"])
    profile = profile_with(name, free_text={"nlp": False})
    summary = _run_profile([source], tmp_path, profile)
    from gateway.intake.directory import describe

    data = json.loads(json.dumps([describe(o) for o in summary.run.outcomes]))
    assert [d["status"] for d in data] == ["forwarded", "quarantined"]
    assert data[1]["reason"] == "not-fhir" and summary.processed == 1


def test_provenance_names_the_profile(tmp_path: Path) -> None:
    from gateway.fhir.validation import validation_issues
    from gateway.profiles.fhir_model import FhirVersion

    source = _write_ndjson(tmp_path / "p.ndjson", [PATIENT, _obs(1)])
    _run([source], tmp_path, provenance=True)
    provs = [
        r for r in read_ndjson_dir(tmp_path / "out" / "fhir") if r["resourceType"] == "Provenance"
    ]
    assert len(provs) == 1  # the payload that delivered the Patient carries one
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
    from gateway.fhir.resolver import InMemoryPatientIndex
    from gateway.pipeline.fhir_stages import FhirProcessor

    index = InMemoryPatientIndex(linkage.identity)
    index.register_patient(PATIENT)
    index.add_phi(person, header)  # a directory of patients may know more than the payload
    (out_obs,) = FhirProcessor(profile, linkage).process(obs, index).resources
    out = json.dumps(out_obs)
    assert "Holloway" not in out and "Margarethe" not in out and "ACC20240917" not in out
    assert "stable" in out


def test_quarantine_detail_says_where_not_what(tmp_path: Path) -> None:
    source = _write_ndjson(
        tmp_path / "w.ndjson",
        [PATIENT, _obs(1, effectiveDateTime="Smith 12"), _obs(2, colour="Smith")],
    )
    summary = _run([source], tmp_path)
    details = summary.details()
    assert details[0].endswith("at Observation.effectiveDateTime")
    assert details[1].endswith("at Observation")
    assert not any("Smith" in d or "colour" in d for d in details)


def test_a_resource_whose_patient_is_not_in_the_input_is_quarantined(tmp_path: Path) -> None:
    """Nothing more can arrive in a directory run: a reference to an unknown Patient is
    ``unresolved-patient``, the same reason the service gives when its wait runs out."""
    source = _write_ndjson(tmp_path / "o.ndjson", [_obs(1)])
    summary = _run([source], tmp_path)
    assert summary.reasons() == ["unresolved-patient"] and summary.processed == 0
    assert not (tmp_path / "out" / "fhir").exists()


def test_a_bad_fhir_file_among_good_ones_is_quarantined_alone(tmp_path: Path) -> None:
    """A Patient whose identifier.system is a number (not a string) beside good bundles: the
    good ones are delivered, the bad one quarantined, exit 1, no traceback."""
    import subprocess
    import sys

    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(2):
        study = LinkedStudy(mrn=f"MRN-GOOD-{n}", family=f"Goodwin{n}")
        (inputs / f"good-{n}.json").write_text(json.dumps(linked_bundle(study)))
    bad = dict(PATIENT, identifier=[{"system": 12345, "value": "MRN-909"}])
    (inputs / "bad-patient.json").write_text(json.dumps(bad))
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "deidentify", "--input", str(inputs),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    quarantined = [line for line in done.stderr.splitlines() if ": quarantined (" in line]
    assert len(quarantined) == 1 and "bad-patient.json" in quarantined[0]
    delivered = read_ndjson_dir(tmp_path / "out" / "fhir")
    # both good bundles arrive: their two Patients, and every resource id of the inputs
    assert len([r for r in delivered if r["resourceType"] == "Patient"]) == 2
    ids = {(e["resource"]["resourceType"], e["resource"].get("id") or e.get("fullUrl"))
           for n in range(2) for e in json.loads((inputs / f"good-{n}.json").read_text())["entry"]}
    assert len({(r["resourceType"], r["id"]) for r in delivered}) == len(ids) + 1  # Patients differ
    assert "Vandersloot" not in done.stderr and "12345" not in done.stderr
