"""References of every form stay resolvable after ids change (bundle form and flat form)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from gateway.fhir.bundle import deidentify_fhir
from gateway.fhir.references import IdMapper, ReferenceMode
from gateway.fhir.resolver import InMemoryPatientIndex
from tests.fhir_fixtures import MRN_SYSTEM, linkage_for, profile_with

PATIENT_UUID = "urn:uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301"
ORG_UUID = "urn:uuid:7c9e6679-7425-40de-944b-e07fc1f90ae7"


def _mapper() -> tuple[IdMapper, Any]:
    profile = profile_with("research", free_text={"nlp": False})
    linkage = linkage_for(profile)
    index = InMemoryPatientIndex(linkage.identity)
    index.register_patient(
        {
            "resourceType": "Patient",
            "id": "p1",
            "identifier": [{"system": MRN_SYSTEM, "value": "M1"}],
        },
        PATIENT_UUID,
    )
    index.register_entry(PATIENT_UUID, "Patient", "p1")
    index.register_entry(ORG_UUID, "Organization", "o1")
    mapper = IdMapper(linkage, index, research_base_url="https://research.example.org/fhir")
    return mapper, linkage


@pytest.mark.parametrize(
    ("reference", "mode", "expected"),
    [
        ("Patient/p1", ReferenceMode.FLAT, "Patient/{pid}"),
        ("Patient/p1/_history/3", ReferenceMode.FLAT, "Patient/{pid}"),
        ("http://hospital.example.org/fhir/Patient/p1", ReferenceMode.FLAT, "Patient/{pid}"),
        ("http://hospital.example.org/fhir/Patient/p1", ReferenceMode.BUNDLE,
         "https://research.example.org/fhir/Patient/{pid}"),
        (f"Patient?identifier={MRN_SYSTEM}|M1", ReferenceMode.FLAT, "Patient/{pid}"),
        (f"Patient?identifier={MRN_SYSTEM}|M1", ReferenceMode.BUNDLE, "Patient/{pid}"),
        (PATIENT_UUID, ReferenceMode.FLAT, "Patient/{pid}"),
        (PATIENT_UUID, ReferenceMode.BUNDLE, "{patient_url}"),
        (ORG_UUID, ReferenceMode.FLAT, "Organization/{oid}"),
        ("Organization/o1", ReferenceMode.FLAT, "Organization/{oid}"),
        ("#ref1", ReferenceMode.FLAT, "#{contained}"),
        ("urn:oid:1.2.3.4.5", ReferenceMode.FLAT, "urn:oid:{uid}"),
    ],
)  # fmt: skip
def test_reference_forms(reference: str, mode: ReferenceMode, expected: str) -> None:
    mapper, linkage = _mapper()
    person = linkage.person(linkage.identity.from_fhir(MRN_SYSTEM, "M1"))
    values = {
        "pid": person.patient_id,
        "patient_url": mapper.patient_full_url(person),
        "oid": linkage.pseudonymizer.resource_id("Organization", "o1"),
        "contained": mapper.contained_id("ref1"),
        "uid": linkage.pseudonymizer.uid("1.2.3.4.5"),
    }
    assert mapper.reference(reference, mode) == expected.format(**values)


def test_uuid_full_urls_stay_valid_uuids_and_match_references() -> None:
    mapper, _ = _mapper()
    mapped = mapper.full_url(ORG_UUID, "Organization", "o1")
    assert mapped.startswith("urn:uuid:")
    uuid.UUID(mapped[9:])
    assert mapper.reference(ORG_UUID, ReferenceMode.BUNDLE) == mapped


def test_conditional_non_patient_keeps_a_pseudonymised_search() -> None:
    mapper, linkage = _mapper()
    out = mapper.reference("Organization?identifier=http://npi|123&name=Mercy", ReferenceMode.FLAT)
    assert out == "Organization?identifier=http://npi|" + linkage.pseudonymizer.identifier(
        "http://npi", "123"
    )
    assert mapper.reference("Organization?name=Mercy", ReferenceMode.FLAT) is None


def _resolve_all(bundle: dict[str, Any]) -> None:
    full_urls = {e["fullUrl"] for e in bundle["entry"] if "fullUrl" in e}
    literal = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
        if "id" in e["resource"]
    }

    def check(obj: Any, contained: set[str]) -> None:
        if isinstance(obj, dict):
            ref = obj.get("reference")
            if isinstance(ref, str):
                if ref.startswith("#"):
                    assert ref[1:] in contained
                else:
                    assert (
                        ref in full_urls
                        or ref in literal
                        or any(u.endswith("/" + ref) for u in full_urls)
                    ), ref
            for value in obj.values():
                check(value, contained)
        elif isinstance(obj, list):
            for item in obj:
                check(item, contained)

    for entry in bundle["entry"]:
        check(entry["resource"], {c["id"] for c in entry["resource"].get("contained", [])})


def test_bundle_with_every_reference_form_resolves() -> None:
    profile = profile_with("research", free_text={"nlp": False})
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": PATIENT_UUID, "request": {"method": "POST", "url": "Patient"},
             "resource": {"resourceType": "Patient", "id": "p1",
                          "identifier": [{"system": MRN_SYSTEM, "value": "M1"}]}},
            {"fullUrl": "http://hospital.example.org/fhir/Organization/o2",
             "request": {"method": "PUT", "url": "Organization/o2"},
             "resource": {"resourceType": "Organization", "id": "o2", "name": "Mercy"}},
            {"fullUrl": ORG_UUID, "request": {"method": "POST", "url": "Encounter"},
             "resource": {
                 "resourceType": "Encounter", "id": "e1", "status": "finished",
                 "class": {"code": "AMB"},
                 "contained": [{"resourceType": "Location", "id": "loc", "name": "Room 4"}],
                 "subject": {"reference": PATIENT_UUID},
                 "serviceProvider": {"reference": "http://hospital.example.org/fhir/Organization/o2"},
                 "location": [{"location": {"reference": "#loc"}}],
             }},
        ],
    }  # fmt: skip
    out = deidentify_fhir(bundle, profile, linkage_for(profile))
    patient = out["entry"][0]
    assert patient["resource"]["id"] != "p1"
    assert out["entry"][2]["resource"]["subject"]["reference"] == patient["fullUrl"]
    assert out["entry"][1]["request"]["url"] == "Organization/" + out["entry"][1]["resource"]["id"]
    assert out["entry"][1]["fullUrl"].endswith("/Organization/" + out["entry"][1]["resource"]["id"])
    _resolve_all(out)
    assert "link" not in out


@pytest.mark.parametrize(
    "bundle_type", ["transaction", "batch", "collection", "searchset", "document", "message"]
)
def test_every_bundle_type_keeps_its_form_and_validates(bundle_type: str) -> None:
    from gateway.fhir.validation import validation_issues
    from gateway.profiles.fhir_model import FhirVersion
    from tests.fhir_fixtures import LinkedStudy, linked_bundle

    profile = profile_with("research", free_text={"nlp": False})
    bundle = linked_bundle(LinkedStudy())
    bundle["type"] = bundle_type
    bundle["id"] = "b1"
    bundle["timestamp"] = "2021-03-16T08:00:00Z"
    bundle["identifier"] = {"system": "http://hospital.example.org/bundles", "value": "B-77"}
    bundle["link"] = [{"relation": "self", "url": "http://h/fhir/Patient?name=Quellwater"}]
    for entry in bundle["entry"]:
        if bundle_type not in ("transaction", "batch"):
            del entry["request"]
        if bundle_type == "searchset":
            entry["search"] = {"mode": "match", "score": 1}
    if bundle_type == "searchset":
        bundle["total"] = len(bundle["entry"])
    out = deidentify_fhir(bundle, profile, linkage_for(profile))
    assert out["type"] == bundle_type and "link" not in out
    assert out["identifier"]["value"] != "B-77" and out["id"] != "b1"
    assert out["timestamp"] != bundle["timestamp"]
    assert len(out["entry"]) == len(bundle["entry"])
    if bundle_type == "searchset":
        assert out["total"] == len(bundle["entry"])
        assert all(e["search"] == {"mode": "match", "score": 1} for e in out["entry"])
    _resolve_all(out)
    assert validation_issues(out, FhirVersion.R4) == []
    assert "Quellwater" not in str(out)
