"""Issue 15's acceptance, end to end with real parts: a CT study is de-identified into the
research store (a real Orthanc); the partner retrieves the pseudonymised series over DICOMweb,
builds a DICOM SEG on it with highdicom and writes a FHIR Observation on the pseudonymised
Patient; both come back through the return doors of a live gateway; the SEG lands in a second
Orthanc (the clinical PACS) in the original study, its references resolving to the original
SOP Instance UIDs, and the Observation on the original Patient in the (real) FHIR server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from werkzeug.serving import make_server

from gateway.persistence.tokens import Role, create_token
from tests import fhir_server_harness, orthanc_harness
from tests.dicom_fixtures import Patient
from tests.fhir_fixtures import read_ndjson_dir
from tests.orthanc_harness import OrthancServer
from tests.return_fixtures import ct_series, observation_on, referenced_instances, seg_on
from tests.server_process import serve_for_session
from tests.service_helpers import gw, make_app, multipart, token

pytest.importorskip("highdicom", reason="highdicom builds the returned SEG (pip install highdicom)")

orthanc_server = orthanc_harness.orthanc_server  # the research store
orthanc = orthanc_harness.orthanc
fhir_server_process = fhir_server_harness.fhir_server_process  # the hospital's FHIR server
fhir_server = fhir_server_harness.fhir_server

PATIENT = Patient(patient_id="MRN5550123", family="ABERNATHY", given="CORDELIA")
UID_ROOT = "1.2.826.0.1.3680043.10.777"


@pytest.fixture(scope="module")
def clinical_pacs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A second Orthanc: the hospital's clinical PACS (its own ports, storage and index)."""
    binary, plugin = orthanc_harness._require()
    server = OrthancServer(tmp_path_factory.mktemp("clinical-pacs"), binary, plugin,
                           {"Name": "clinical-pacs", "DicomAet": "CLINPACS",
                            "DicomAlwaysAllowStore": True})  # the gateway's C-STORE
    yield from serve_for_session(server)


@pytest.fixture()
def clinical_pacs(clinical_pacs_server: OrthancServer) -> OrthancServer:
    clinical_pacs_server.start()
    clinical_pacs_server.clear()
    return clinical_pacs_server


@pytest.fixture(params=["dicomweb", "dimse"])
def live(request: pytest.FixtureRequest, tmp_path: Path, orthanc: OrthancServer,
         clinical_pacs: OrthancServer, fhir_server: Any) -> Iterator[tuple[Any, str, str]]:
    """The gateway, its clinical PACS reached by DICOMweb (STOW-RS) or by C-STORE."""
    assert orthanc.http_port != clinical_pacs.http_port
    clinical = (
        {"type": "dicomweb", "url": clinical_pacs.dicomweb_url}
        if request.param == "dicomweb"
        else {"type": "dimse", "url": f"dimse://CLINPACS@127.0.0.1:{clinical_pacs.dicom_port}"}
    )
    app = make_app(tmp_path / "data", destinations={"default": {
        "profile": "research",
        "store": {"type": "dicomweb", "url": orthanc.dicomweb_url},
        "returns": {
            "uid_root": UID_ROOT,
            "dicom_store": clinical,
            "fhir_store": {"type": "fhir", "url": fhir_server.base_url},
        },
    }})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}", request.param
    finally:
        server.shutdown()


def _hospital_patient(logical_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": logical_id,
        "identifier": [{"system": "urn:oid:1.2.826.0.1.3680043.10.777.1", "value": PATIENT.patient_id}],
        "name": [{"family": PATIENT.family.title(), "given": [PATIENT.given.title()]}],
        "gender": "female",
        "birthDate": "1947-03-12",
    }


def test_seg_and_observation_come_back_to_the_original_patient(
    live: Any, orthanc: OrthancServer, clinical_pacs: OrthancServer, fhir_server: Any,
    tmp_path: Path,
) -> None:
    app, base, transport = live
    hospital_id = f"hosp-e2e-{transport}"  # the FHIR server is the session's: own ids
    originals = ct_series(PATIENT, "e2e-return-study", 3)
    # the hospital: its PACS holds the original study, its FHIR server the original Patient
    for ds in originals:
        body, content_type = multipart([ds])
        clinical_pacs.rest("POST", "/dicom-web/studies", data=body,
                           headers={"Content-Type": content_type})
    put = requests.put(f"{fhir_server.base_url}/Patient/{hospital_id}",
                       data=json.dumps(_hospital_patient(hospital_id)), timeout=30,
                       headers={"Content-Type": "application/fhir+json"})
    assert put.status_code in (200, 201), put.text

    # outbound: the study (STOW-RS, dicomweb-client) and the Patient through the gateway
    sender = token(app, Role.SENDER)
    DICOMwebClient(f"{base}/dicomweb", headers=sender).store_instances(originals)
    answer = requests.post(f"{base}/fhir/Patient", data=json.dumps(_hospital_patient(hospital_id)), timeout=30,
                           headers={**sender, "Content-Type": "application/fhir+json"})
    assert answer.status_code == 202, answer.text
    gw(app).jobs.drain(120)
    assert gw(app).jobs.backlog() == 0

    # the partner's side: the pseudonymised series from the research Orthanc
    research = DICOMwebClient(orthanc.dicomweb_url)
    (study,) = research.search_for_studies()
    pseudo_study = study["0020000D"]["Value"][0]
    assert pseudo_study != originals[0].StudyInstanceUID
    delivered = research.retrieve_study(pseudo_study)
    assert len(delivered) == 3
    seg = seg_on(delivered)
    (pseudo_patient,) = [r for r in read_ndjson_dir(tmp_path / "data" / "store" / "default" / "fhir")
                         if r["resourceType"] == "Patient"]
    observation = observation_on(f"Patient/{pseudo_patient['id']}")

    # the way back, with the partner's own token
    partner = {"Authorization": f"Bearer {create_token(gw(app).db, Role.PARTNER, None, 'default')}"}
    stored = DICOMwebClient(f"{base}/d/default/return/dicomweb", headers=partner).store_instances([seg])
    assert len(stored.ReferencedSOPSequence) == 1
    answer = requests.post(f"{base}/d/default/return/fhir", data=json.dumps(observation),
                           timeout=30, headers={**partner, "Content-Type": "application/fhir+json"})
    assert answer.status_code == 202, answer.text
    gw(app).jobs.drain(120)
    assert gw(app).jobs.backlog() == 0
    assert gw(app).review.listing() == []

    # the SEG is in the clinical PACS, in the original study of the original patient
    clinic = DICOMwebClient(clinical_pacs.dicomweb_url)
    (clinical_study,) = clinic.search_for_studies()
    assert clinical_study["0020000D"]["Value"][0] == originals[0].StudyInstanceUID
    assert clinical_study["00100020"]["Value"][0] == PATIENT.patient_id
    assert len(clinical_pacs.rest("GET", "/patients").json()) == 1
    series = clinic.search_for_series(study_instance_uid=originals[0].StudyInstanceUID)
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert modalities == ["CT", "SEG"]
    (seg_series,) = [s for s in series if s["00080060"]["Value"][0] == "SEG"]
    assert seg_series["0008103E"]["Value"][0].startswith("RESEARCH RESULT: ")
    (back,) = clinic.retrieve_series(originals[0].StudyInstanceUID,
                                     seg_series["0020000E"]["Value"][0])
    assert back.SOPInstanceUID.startswith(UID_ROOT + ".")
    assert referenced_instances(back) == {o.SOPInstanceUID for o in originals}
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == originals[0].SeriesInstanceUID
    assert back.FrameOfReferenceUID == originals[0].FrameOfReferenceUID
    assert str(back.PatientName) == PATIENT.name and back.PatientBirthDate == PATIENT.birth_date
    clinical_sops = {i["00080018"]["Value"][0] for i in clinic.search_for_instances(
        study_instance_uid=originals[0].StudyInstanceUID)}
    assert referenced_instances(back) <= clinical_sops  # they resolve in the clinical PACS
    assert any(item.Manufacturer == "deid-gateway" for item in back.ContributingEquipmentSequence)
    for ds in delivered:  # not one pseudonymised UID is left in the clinical object
        assert ds.SOPInstanceUID not in str(back)

    # the Observation is on the original Patient in the FHIR server, marked
    found = fhir_server.search("Observation", subject=f"Patient/{hospital_id}")
    assert len(found) == 1
    (landed,) = found
    assert landed["subject"]["reference"] == f"Patient/{hospital_id}"
    assert any(t.get("code") == "research-result" for t in landed["meta"]["tag"])
    assert landed["note"] == observation["note"]  # the partner's text, as written

    # the research side never saw any of it
    assert len(orthanc.instance_ids()) == 3
    assert isinstance(pydicom.dcmread, object)


def test_a_clinical_pacs_that_is_down_makes_the_result_wait_not_fail(
    tmp_path: Path, orthanc: OrthancServer, clinical_pacs: OrthancServer,
) -> None:
    app = make_app(tmp_path / "data", retry={"first_delay_seconds": 0.2, "max_delay_seconds": 0.5},
                   destinations={"default": {
                       "store": {"type": "dicomweb", "url": orthanc.dicomweb_url},
                       "returns": {"uid_root": UID_ROOT, "dicom_store": {
                           "type": "dicomweb", "url": clinical_pacs.dicomweb_url}}}})
    originals = ct_series(PATIENT, "e2e-retry-study", 2)
    body, content_type = multipart(originals)
    client = app.test_client()
    sent = client.post("/dicomweb/studies", data=body,
                       headers={**token(app, Role.SENDER), "Content-Type": content_type})
    assert sent.status_code == 200
    gw(app).jobs.drain(60)
    research = DICOMwebClient(orthanc.dicomweb_url)
    (study,) = research.search_for_studies()
    seg = seg_on(research.retrieve_study(study["0020000D"]["Value"][0]))
    partner = {"Authorization": f"Bearer {create_token(gw(app).db, Role.PARTNER, None, 'default')}"}
    clinical_pacs.stop()
    try:
        body, content_type = multipart([seg])
        answer = client.post("/d/default/return/dicomweb/studies", data=body,
                             headers={**partner, "Content-Type": content_type})
        assert answer.status_code == 200
        gw(app).jobs.drain(1.5)
        status = client.get(answer.headers["Content-Location"],
                            headers=token(app, Role.PRIVACY_OFFICER)).get_json()
        assert status["counts"] == {"retry": 1}  # waiting for the PACS, not quarantined
    finally:
        clinical_pacs.start()
    gw(app).jobs.drain(60)
    status = client.get(answer.headers["Content-Location"],
                        headers=token(app, Role.PRIVACY_OFFICER)).get_json()
    assert status["counts"] == {"forwarded": 1}
    assert clinical_pacs.instance_count() == 1
