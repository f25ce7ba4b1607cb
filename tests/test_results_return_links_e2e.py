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
from dicomweb_client.api import DICOMwebClient
from flask import Flask

from gateway.persistence.tokens import Role, create_token
from tests import fhir_server_harness, orthanc_harness
from tests.dicom_fixtures import Patient
from tests.orthanc_harness import OrthancServer
from tests.return_fixtures import ct_series, observation_on, seg_on, sr_citing
from tests.service_helpers import gw, make_app, multipart, token

pytest.importorskip("highdicom", reason="highdicom builds the returned SEG (pip install highdicom)")

fhir_server_process = fhir_server_harness.fhir_server_process  # the hospital's FHIR server
fhir_server = fhir_server_harness.fhir_server
orthanc_server = orthanc_harness.orthanc_server  # the clinical PACS here
orthanc = orthanc_harness.orthanc

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


def _return_dicom(app: Flask, datasets: list[pydicom.Dataset]) -> None:
    body, content_type = multipart(datasets)
    answer = app.test_client().post("/d/default/return/dicomweb/studies", data=body,
                                    headers={**_partner(app), "Content-Type": content_type})
    assert answer.status_code == 200, answer.data


def _cited(sr: pydicom.Dataset) -> tuple[set[str], set[str]]:
    """(series, instances) the SR cites, in its evidence and its content."""
    (study,) = sr.CurrentRequestedProcedureEvidenceSequence
    series = {s.SeriesInstanceUID for s in study.ReferencedSeriesSequence}
    instances = {r.ReferencedSOPInstanceUID for s in study.ReferencedSeriesSequence
                 for r in s.ReferencedSOPSequence}
    instances |= {r.ReferencedSOPInstanceUID for item in sr.ContentSequence
                  for r in item.get("ReferencedSOPSequence", [])}
    return series, instances


@pytest.mark.parametrize("together", [False, True], ids=["seg-earlier", "one-request"])
def test_an_sr_citing_the_partners_seg_lands_citing_the_segs_new_uids(
    tmp_path: Path, orthanc: OrthancServer, together: bool,
) -> None:
    app = _app(tmp_path, "http://127.0.0.1:9/fhir",  # no FHIR in this test
               dicom_store={"type": "dicomweb", "url": orthanc.dicomweb_url})
    originals = ct_series(Patient(patient_id="MRN7730200"), "sr-on-seg-study", 2)
    _deliver_dicom(app, originals)
    delivered = [pydicom.dcmread(p) for p in (tmp_path / "data" / "store" / "default").rglob("*.dcm")]
    seg = seg_on(delivered)
    sr = sr_citing(seg)
    if together:
        _return_dicom(app, [seg, sr])
    else:
        _return_dicom(app, [seg])
        gw(app).jobs.drain(60)
        _return_dicom(app, [sr])
    gw(app).jobs.drain(60)
    assert gw(app).review.listing() == []

    clinic = DICOMwebClient(orthanc.dicomweb_url)
    study_uid = originals[0].StudyInstanceUID
    series = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0]
              for s in clinic.search_for_series(study_instance_uid=study_uid)}
    assert sorted(series) == ["SEG", "SR"]  # the CT is not in this PACS: only the results
    (seg_back,) = clinic.retrieve_series(study_uid, series["SEG"])
    (sr_back,) = clinic.retrieve_series(study_uid, series["SR"])
    assert seg_back.SOPInstanceUID.startswith(UID_ROOT + ".")
    assert _cited(sr_back) == ({seg_back.SeriesInstanceUID}, {seg_back.SOPInstanceUID})
    assert sr_back.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == study_uid
    assert sr_back.ContentSequence[1].TextValue == "lesion as segmented, 12 mm"  # as written
    assert sr_back.PatientID == "MRN7730200"
    for partner_uid in (seg.SOPInstanceUID, seg.SeriesInstanceUID, sr.SOPInstanceUID):
        assert partner_uid not in str(sr_back)


def test_an_sr_citing_an_object_nobody_returned_is_still_quarantined(tmp_path: Path) -> None:
    app = _app(tmp_path, "http://127.0.0.1:9/fhir")
    _deliver_dicom(app, ct_series(Patient(patient_id="MRN7730201"), "sr-on-nothing", 2))
    delivered = [pydicom.dcmread(p) for p in (tmp_path / "data" / "store" / "default").rglob("*.dcm")]
    seg = seg_on(delivered)  # never returned
    _return_dicom(app, [sr_citing(seg)])
    gw(app).jobs.drain(60)
    (item,) = gw(app).review.listing()
    assert item["reason"] == "unknown-pseudonym"
    assert not list((tmp_path / "clinical-pacs").rglob("*.dcm")) if (tmp_path / "clinical-pacs").exists() else True


def test_a_report_citing_an_observation_returned_earlier_cites_its_new_id(
    tmp_path: Path, fhir_server: Any,
) -> None:
    patient = Patient(patient_id="MRN7730300", issuer="")
    app = _app(tmp_path, fhir_server.base_url)
    _put_patient(fhir_server.base_url, "hosp-report-1", patient.patient_id)
    _deliver_dicom(app, ct_series(patient, "report-study", 1))
    pseudo = _pseudonymous_patient_id(tmp_path, patient.patient_id)
    observation = observation_on(f"Patient/{pseudo}")
    observation["id"] = "partner-finding-300"
    _return_fhir(app, observation)
    gw(app).jobs.drain(60)
    report = {"resourceType": "DiagnosticReport", "id": "partner-report-300", "status": "final",
              "code": {"text": "AI read"}, "subject": {"reference": f"Patient/{pseudo}"},
              "result": [{"reference": "Observation/partner-finding-300"}],
              "conclusion": "as in the finding"}
    _return_fhir(app, report)
    unknown = {**report, "id": "partner-report-301",
               "result": [{"reference": "Observation/never-returned"}]}
    _return_fhir(app, unknown)
    gw(app).jobs.drain(60)
    assert [i["reason"] for i in gw(app).review.listing()] == ["unknown-pseudonym"]
    (landed_obs,) = fhir_server.search("Observation", subject="Patient/hosp-report-1")
    (landed,) = fhir_server.search("DiagnosticReport", subject="Patient/hosp-report-1")
    assert landed["result"] == [{"reference": f"Observation/{landed_obs['id']}"}]
    assert landed["conclusion"] == "as in the finding"


def test_an_sr_taken_before_the_seg_of_its_request_is_stored_waits_for_it(
    tmp_path: Path, orthanc: OrthancServer,
) -> None:
    """The clinical PACS is down: the SEG (first part) waits for it; the SR (second part)
    must not be quarantined for citing a UID not yet recorded: it waits for its SEG."""
    app = make_app(tmp_path / "data", retry={"first_delay_seconds": 0.2, "max_delay_seconds": 0.5},
                   destinations={"default": {"profile": "research", "returns": {
                       "uid_root": UID_ROOT,
                       "dicom_store": {"type": "dicomweb", "url": orthanc.dicomweb_url}}}})
    originals = ct_series(Patient(patient_id="MRN7730400"), "sr-waits-study", 2)
    _deliver_dicom(app, originals)
    delivered = [pydicom.dcmread(p) for p in (tmp_path / "data" / "store" / "default").rglob("*.dcm")]
    seg = seg_on(delivered)
    orthanc.stop()
    try:
        _return_dicom(app, [seg, sr_citing(seg)])
        gw(app).jobs.drain(1.5)
        assert gw(app).review.listing() == []  # both wait, neither is quarantined
    finally:
        orthanc.start()
    gw(app).jobs.drain(60)
    assert gw(app).review.listing() == []
    clinic = DICOMwebClient(orthanc.dicomweb_url)
    series = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in
              clinic.search_for_series(study_instance_uid=originals[0].StudyInstanceUID)}
    (seg_back,) = clinic.retrieve_series(originals[0].StudyInstanceUID, series["SEG"])
    (sr_back,) = clinic.retrieve_series(originals[0].StudyInstanceUID, series["SR"])
    assert _cited(sr_back) == ({seg_back.SeriesInstanceUID}, {seg_back.SOPInstanceUID})


def test_the_patient_search_finds_by_identifier_and_a_server_down_is_a_retry(fhir_server: Any) -> None:
    from gateway.broker.clinical_patients import FhirPatientSearch
    from gateway.config import StoreConfig
    from gateway.errors import StoreUnavailable

    _put_patient(fhir_server.base_url, "hosp-search-1", "MRN7730500")
    search = FhirPatientSearch(StoreConfig(type="fhir", url=fhir_server.base_url))
    assert search(MRN_SYSTEM, "MRN7730500") == ["hosp-search-1"]
    assert search("urn:oid:1.2.3.999", "MRN7730500") == []
    assert search(MRN_SYSTEM, "MRN7730501") == []
    with pytest.raises(StoreUnavailable):
        FhirPatientSearch(StoreConfig(type="fhir", url="http://127.0.0.1:9/fhir"))(MRN_SYSTEM, "x")
    with pytest.raises(StoreUnavailable):  # a wrong base: the configuration, not the patient
        FhirPatientSearch(StoreConfig(type="fhir", url=fhir_server.base_url + "/nope"))(
            MRN_SYSTEM, "MRN7730500")
