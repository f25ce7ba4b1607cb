"""Issue 5's acceptance, end to end with real clients and stores: STOW-RS (dicomweb-client) and
C-STORE (pynetdicom) of a PHI-laden study plus a FHIR transaction for the same patient, through
a live gateway, into a real Orthanc (DICOMweb) and a real FHIR server: clean and linked."""

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

from gateway.persistence.tokens import Role
from tests import fhir_server_harness, orthanc_harness
from tests.fhir_fixtures import LinkedStudy, linked_bundle, linked_dicom
from tests.service_helpers import gw, make_app, token

orthanc_server = orthanc_harness.orthanc_server
orthanc = orthanc_harness.orthanc
fhir_server_process = fhir_server_harness.fhir_server_process
fhir_server = fhir_server_harness.fhir_server


@pytest.fixture()
def live(tmp_path: Path, orthanc: Any, fhir_server: Any) -> Iterator[tuple[Any, str]]:
    dimse_port = orthanc_harness.free_port()
    app = make_app(
        tmp_path / "data",
        destinations={"default": {
            "profile": "research",
            "store": {"type": "dicomweb", "url": orthanc.dicomweb_url},
            "fhir_store": {"type": "fhir", "url": fhir_server.base_url},
        }},
        dimse={"enabled": True, "host": "127.0.0.1", "port": dimse_port},
    )
    from gateway.intake.dimse import start_scp, stop_scp

    scp = start_scp(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}", dimse_port
    finally:
        server.shutdown()
        stop_scp(scp)


def test_stow_cstore_and_fhir_land_clean_and_linked(live: Any, orthanc: Any, fhir_server: Any, tmp_path: Path) -> None:
    app, base, dimse_port = live
    study = LinkedStudy()
    first = pydicom.dcmread(linked_dicom(study, tmp_path / "one.dcm"))
    second = pydicom.dcmread(linked_dicom(study, tmp_path / "two.dcm"))
    second.SOPInstanceUID = study.sop_uid + ".2"
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    second.InstanceNumber = 2
    auth = token(app, Role.SENDER)

    # STOW-RS with the real dicomweb-client
    client = DICOMwebClient(f"{base}/dicomweb", headers=auth)
    response = client.store_instances([first])
    assert len(response.ReferencedSOPSequence) == 1

    # C-STORE with pynetdicom as the modality
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, second.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", dimse_port, ae_title="DEIDGW")
    assert assoc.is_established
    assert assoc.send_c_store(second).Status == 0x0000
    assoc.release()

    # FHIR transaction for the same patient
    answer = requests.post(f"{base}/fhir", data=json.dumps(linked_bundle(study)), timeout=30,
                           headers={**auth, "Content-Type": "application/fhir+json"})
    assert answer.status_code == 202, answer.text

    gw(app).jobs.drain(180)
    assert gw(app).jobs.backlog() == 0

    # Orthanc holds the clean study, found by QIDO-RS
    research = DICOMwebClient(orthanc.dicomweb_url)
    (imaging,) = fhir_server.search("ImagingStudy")
    (study_uid,) = [i["value"].removeprefix("urn:oid:") for i in imaging["identifier"]
                    if i.get("system") == "urn:dicom:uid"]
    found = research.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
    assert len(found) == 1, "the ImagingStudy's UID must resolve in the DICOMweb store"
    instances = research.search_for_instances(study_instance_uid=study_uid)
    assert len(instances) == 2
    series_uid = imaging["series"][0]["uid"]
    assert {i["0020000E"]["Value"][0] for i in instances} == {series_uid}
    assert imaging["series"][0]["instance"][0]["uid"] in {i["00080018"]["Value"][0] for i in instances}

    # the FHIR Patient's identifier is the DICOM PatientID; accession equal
    dicom_patient_id = found[0]["00100020"]["Value"][0]
    (patient,) = fhir_server.search("Patient")
    assert any(i.get("value") == dicom_patient_id for i in patient["identifier"])
    assert imaging["subject"]["reference"] == f"Patient/{patient['id']}"
    dicom_accession = found[0]["00080050"]["Value"][0]
    assert any(i.get("value") == dicom_accession for i in imaging["identifier"])

    # nothing identifying anywhere
    stored = b"".join(orthanc.instance_file(i) for i in orthanc.instance_ids()).upper()
    fhir_text = json.dumps([fhir_server.search(t) for t in
                            ("Patient", "ImagingStudy", "ServiceRequest", "Observation", "DiagnosticReport")])
    for phi in study.phi_strings():
        assert phi.upper().encode() not in stored, phi
        assert phi not in fhir_text, phi


def test_unknown_patient_is_asked_from_the_source_fhir_server(tmp_path: Path, fhir_server: Any) -> None:
    """"Ask the source FHIR server": an Observation naming Patient/abc, sent alone, is linked by
    reading Patient/abc from the hospital's FHIR server (here a real one standing in for it)."""
    from tests.test_identity_index import MRN_SYSTEM, observation, patient_resource

    hospital_patient = patient_resource(logical_id="hosp-5512")
    put = requests.put(f"{fhir_server.base_url}/Patient/hosp-5512", data=json.dumps(hospital_patient),
                       headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert put.status_code in (200, 201), put.text
    app = make_app(tmp_path / "data", destinations={"default": {
        "profile": "research", "patient_source": {"type": "fhir", "url": fhir_server.base_url}}})
    response = app.test_client().post("/fhir/Observation", data=json.dumps(observation("hosp-5512")),
                                      headers={**token(app, Role.SENDER), "Content-Type": "application/fhir+json"})
    assert response.status_code == 202
    gw(app).jobs.drain(60)
    status = app.test_client().get(response.headers["Content-Location"], headers=token(app, Role.PRIVACY_OFFICER)).get_json()
    assert status["counts"] == {"forwarded": 1}
    (part,) = list((tmp_path / "data" / "store" / "default" / "fhir" / "Observation").glob("*.ndjson"))
    obs = json.loads(part.read_text())
    linkage = gw(app).destinations["default"].linkage
    person = linkage.person(linkage.identity.from_fhir(MRN_SYSTEM, hospital_patient["identifier"][0]["value"]))
    assert obs["subject"]["reference"] == f"Patient/{person.patient_id}"
