"""Results that the vault alone cannot map, end to end with real parts: a FHIR Observation on
a patient the gateway only ever delivered as DICOM lands on the hospital's Patient found by its
MRN in the real FHIR server (tests/fhir_server_harness.py); and an SR citing a SEG the partner
returned earlier lands in the clinical Orthanc citing the SEG's new UIDs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from flask import Flask

from gateway.persistence.tokens import Role, create_token
from tests import fhir_server_harness
from tests.dicom_fixtures import Patient
from tests.return_fixtures import ct_series, observation_on
from tests.service_helpers import gw, make_app, multipart, token

pytest.importorskip("highdicom", reason="highdicom builds the returned SEG (pip install highdicom)")

fhir_server_process = fhir_server_harness.fhir_server_process  # the hospital's FHIR server
fhir_server = fhir_server_harness.fhir_server

UID_ROOT = "1.2.826.0.1.3680043.10.778"
MRN_SYSTEM = "http://hospital.smarthealthit.org"  # the research profile's local-mrn register


def _app(tmp_path: Path, fhir_url: str, dicom_store: dict[str, Any] | None = None) -> Flask:
    returns: dict[str, Any] = {
        "uid_root": UID_ROOT,
        "fhir_store": {"type": "fhir", "url": fhir_url},
        "dicom_store": dicom_store or {"type": "folder", "path": str(tmp_path / "clinical-pacs")},
    }
    return make_app(tmp_path / "data", destinations={"default": {
        "profile": "research", "returns": returns}})


def _partner(app: Flask) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(gw(app).db, Role.PARTNER, None, 'default')}"}


def _deliver_dicom(app: Flask, images: list[pydicom.Dataset]) -> None:
    body, content_type = multipart(images)
    answer = app.test_client().post("/dicomweb/studies", data=body, headers={
        **token(app, Role.SENDER), "Content-Type": content_type})
    assert answer.status_code == 200, answer.data
    gw(app).jobs.drain(60)


def _pseudonymous_patient_id(tmp_path: Path, mrn_marker: str) -> str:
    ids = {pydicom.dcmread(p).PatientID for p in (tmp_path / "data" / "store" / "default").rglob("*.dcm")}
    assert len(ids) == 1 and mrn_marker not in next(iter(ids))
    return ids.pop()


def _return_fhir(app: Flask, resource: dict[str, Any]) -> Any:
    answer = app.test_client().post("/d/default/return/fhir", data=json.dumps(resource),
                                    headers={**_partner(app), "Content-Type": "application/fhir+json"})
    assert answer.status_code == 202, answer.data
    return answer


def _put_patient(base_url: str, logical_id: str, mrn: str, system: str = MRN_SYSTEM) -> None:
    patient = {"resourceType": "Patient", "id": logical_id,
               "identifier": [{"system": system, "value": mrn}],
               "name": [{"family": "Quennell", "given": ["Ottilie"]}], "birthDate": "1951-06-02"}
    put = requests.put(f"{base_url}/Patient/{logical_id}", data=json.dumps(patient), timeout=30,
                       headers={"Content-Type": "application/fhir+json"})
    assert put.status_code in (200, 201), put.text


def test_an_observation_on_a_dicom_only_patient_lands_on_the_patient_of_its_mrn(
    tmp_path: Path, fhir_server: Any,
) -> None:
    patient = Patient(family="QUENNELL", given="OTTILIE", patient_id="MRN7730041", issuer="")
    app = _app(tmp_path, fhir_server.base_url)
    _put_patient(fhir_server.base_url, "hosp-dicom-only-1", patient.patient_id)
    _put_patient(fhir_server.base_url, "hosp-other-register-1", patient.patient_id,
                 system="urn:oid:1.2.3.999")  # the same number in another register: not them
    _deliver_dicom(app, ct_series(patient, "dicom-only-study", 1))  # no FHIR Patient delivered
    pseudo = _pseudonymous_patient_id(tmp_path, patient.patient_id)
    observation = observation_on(f"Patient/{pseudo}")
    observation["id"] = "partner-dicom-only-finding"
    _return_fhir(app, observation)
    gw(app).jobs.drain(60)
    assert gw(app).review.listing() == []
    (landed,) = fhir_server.search("Observation", subject="Patient/hosp-dicom-only-1")
    assert landed["subject"] == {"reference": "Patient/hosp-dicom-only-1"}
    assert landed["note"] == observation["note"]  # the partner's text, as written
    assert any(t.get("code") == "research-result" for t in landed["meta"]["tag"])
    assert pseudo not in json.dumps(landed)
    # nothing of the MRN or the patient went into the logs' records: the audit stays value-free
    audit = app.test_client().get("/audit", headers=token(app, Role.ADMIN)).get_data(as_text=True)
    assert patient.patient_id not in audit and patient.family not in audit.upper()


def test_a_dicom_only_patient_the_clinic_does_not_hold_or_whose_register_is_undeclared_waits_in_quarantine(
    tmp_path: Path, fhir_server: Any,
) -> None:
    app = _app(tmp_path, fhir_server.base_url)
    missing = Patient(patient_id="MRN7730099", issuer="")  # no Patient with this MRN
    _deliver_dicom(app, ct_series(missing, "missing-study", 1))
    pseudo = _pseudonymous_patient_id(tmp_path, missing.patient_id)
    _return_fhir(app, observation_on(f"Patient/{pseudo}"))
    gw(app).jobs.drain(60)
    (item,) = gw(app).review.listing()
    assert item["reason"] == "patient-not-found"
    assert missing.patient_id not in json.dumps(item)

    other = tmp_path / "other"
    app = _app(other, fhir_server.base_url)
    undeclared = Patient(patient_id="MRN7730100")  # issuer STMERCY: no namespace declares it
    _put_patient(fhir_server.base_url, "hosp-undeclared-1", undeclared.patient_id)
    _deliver_dicom(app, ct_series(undeclared, "undeclared-study", 1))
    pseudo = _pseudonymous_patient_id(other, undeclared.patient_id)
    _return_fhir(app, observation_on(f"Patient/{pseudo}"))
    gw(app).jobs.drain(60)
    (item,) = gw(app).review.listing()
    assert item["reason"] == "register-undeclared"
    assert "STMERCY" not in json.dumps(item) and undeclared.patient_id not in json.dumps(item)
    assert fhir_server.search("Observation", subject="Patient/hosp-undeclared-1") == []


def test_the_register_of_a_dicom_issuer_names_its_fhir_systems() -> None:
    from gateway.linkage.identity import IdentityMap, IdentityNamespace

    identity = IdentityMap((IdentityNamespace("local-mrn", (), ("urn:a",)),
                            IdentityNamespace("regional", ("REGION",), ("urn:b", "urn:c"))),
                           "local-mrn")
    assert identity.fhir_systems_of_dicom("") == ("urn:a",)
    assert identity.fhir_systems_of_dicom(" REGION ") == ("urn:b", "urn:c")
    assert identity.fhir_systems_of_dicom("STMERCY") == ()
