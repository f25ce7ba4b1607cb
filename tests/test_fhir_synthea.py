"""Acceptance on every Synthea bundle: no patient identifier survives (base64 notes decoded
included), every reference resolves inside the output, and the output validates (R4B models).

The batch runs once per profile (module fixture) with the profile as shipped (NLP on for
research), over all files of the corpus, so references to the shared Organization/Practitioner
bundles must resolve across files.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.fhir.validation import validation_issues
from gateway.intake.directory import RunConfig, RunSummary, describe, run_directory
from gateway.profiles.fhir_model import FhirVersion
from tests.conftest import TEST_KEY
from tests.fhir_fixtures import (
    MRN_SYSTEM,
    linkage_for,
    patient_phi,
    profile_with,
    read_ndjson_dir,
    synthea_files,
    synthea_patient_bundles,
    walk_strings,
)


@pytest.fixture(scope="module", params=["research", "safe-harbor", "basic"])
def run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, RunSummary, list[dict[str, Any]]]:
    # module scope runs before the conftest's function-scoped key fixture: set the same key
    # for the duration of this fixture only
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEID_GATEWAY_KEY", TEST_KEY)
        profile = profile_with(request.param)
        out = tmp_path_factory.mktemp(f"out-{request.param}")
        linkage_for(profile)
        config = RunConfig(profile, out, out.with_name(out.name + ".quarantine"), None)
        summary = run_directory(synthea_files(), config)
    return request.param, summary, read_ndjson_dir(out / "fhir")


def _inputs() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in synthea_patient_bundles()]


def test_everything_delivered(run: tuple[str, RunSummary, list[dict[str, Any]]]) -> None:
    _, summary, resources = run
    expected = sum(len(json.loads(p.read_text())["entry"]) for p in synthea_files())
    assert not summary.quarantined, [describe(q) for q in summary.quarantined]
    assert summary.fhir_resources == expected == len(resources)


def test_no_patient_identifier_survives(
    run: tuple[str, RunSummary, list[dict[str, Any]]],
) -> None:
    _, _, resources = run
    text = "\n".join(s for r in resources for s in walk_strings(r)).lower()
    for bundle in _inputs():
        patient = next(
            e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
        )
        phi = patient_phi(patient)
        assert len(phi) >= 8  # names, line, phone, SSN, MRN, licence, passport, birth date
        for value in phi:
            assert value.lower() not in text, "a patient identifier survived"
        assert patient["id"].lower() not in text  # Synthea's id is also the MRN


def test_every_reference_resolves(run: tuple[str, RunSummary, list[dict[str, Any]]]) -> None:
    _, _, resources = run
    ids = {f"{r['resourceType']}/{r['id']}" for r in resources}
    seen = 0

    def check(obj: Any, contained: set[str]) -> None:
        nonlocal seen
        if isinstance(obj, dict):
            ref = obj.get("reference")
            if isinstance(ref, str):
                seen += 1
                if ref.startswith("#"):
                    assert ref[1:] in contained, "contained reference does not resolve"
                else:
                    assert ref in ids, "reference does not resolve inside the output"
            for value in obj.values():
                check(value, contained)
        elif isinstance(obj, list):
            for item in obj:
                check(item, contained)

    for resource in resources:
        contained = {c["id"] for c in resource.get("contained", [])}
        check(resource, contained)
    assert seen > 5000


def test_output_validates(run: tuple[str, RunSummary, list[dict[str, Any]]]) -> None:
    _, _, resources = run
    for resource in resources:
        assert validation_issues(resource, FhirVersion.R4B) == []


def test_patient_is_linked_and_labelled(
    run: tuple[str, RunSummary, list[dict[str, Any]]],
) -> None:
    name, _, resources = run
    profile = profile_with(name)
    linkage = linkage_for(profile)
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert len(patients) == len(synthea_patient_bundles())
    expected_ids = set()
    for bundle in _inputs():
        patient = next(
            e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
        )
        mrn = next(i["value"] for i in patient["identifier"] if i.get("system") == MRN_SYSTEM)
        expected_ids.add(linkage.person(linkage.identity.from_dicom(mrn, None)).patient_id)
    assert {p["id"] for p in patients} == expected_ids
    for patient in patients:
        assert "name" not in patient and "telecom" not in patient
        codes = {s["code"] for s in patient["meta"]["security"]}
        assert "PSEUDED" in codes
        for address in patient.get("address", []):
            assert set(address) <= {"state", "country", "postalCode", "use", "type"}


def test_clinical_codes_and_values_kept(
    run: tuple[str, RunSummary, list[dict[str, Any]]],
) -> None:
    _, _, resources = run
    quantities = [
        r["valueQuantity"]
        for r in resources
        if r["resourceType"] == "Observation" and "valueQuantity" in r
    ]
    assert quantities and all({"value", "unit", "code"} <= set(q) for q in quantities)
    codes = [c for r in resources if r["resourceType"] == "Condition" for c in r["code"]["coding"]]
    assert codes and all(
        c["system"] == "http://snomed.info/sct" and c.get("display") for c in codes
    )


def test_dates_moved_by_the_patients_offset(
    run: tuple[str, RunSummary, list[dict[str, Any]]],
) -> None:
    import datetime as dt

    name, _, resources = run
    profile = profile_with(name)
    linkage = linkage_for(profile)
    p = linkage.pseudonymizer
    out = {r["id"]: r for r in resources if r["resourceType"] == "Encounter"}
    checked = 0
    for bundle in _inputs():
        patient = next(
            e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
        )
        mrn = next(i["value"] for i in patient["identifier"] if i.get("system") == MRN_SYSTEM)
        person = linkage.person(linkage.identity.from_fhir(MRN_SYSTEM, mrn))  # type: ignore[arg-type]
        for entry in bundle["entry"]:
            original = entry["resource"]
            if original["resourceType"] != "Encounter":
                continue
            shifted = out[p.resource_id("Encounter", original["id"])]["period"]["start"]
            before = original["period"]["start"]
            if name == "safe-harbor":
                assert shifted == before[:4]
            else:
                delta = dt.date.fromisoformat(shifted[:10]) - dt.date.fromisoformat(before[:10])
                assert delta.days == person.date_offset_days != 0
                assert shifted[10:] == before[10:]
            checked += 1
    assert checked > 100
