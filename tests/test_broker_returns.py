"""Results returned by a partner: mapped back through the vault to the original patient and
study and forwarded to the clinic's stores (folder stores here; real Orthanc + FHIR server in
tests/test_results_return_e2e.py); unknown and foreign pseudonyms quarantined."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
from flask import Flask

from gateway.persistence.tokens import Role, create_token
from tests.dicom_fixtures import Patient
from tests.fhir_fixtures import read_ndjson_dir
from tests.return_fixtures import ct_series, observation_on, referenced_instances, seg_on
from tests.service_helpers import gw, make_app, multipart, token

pytest.importorskip("highdicom", reason="highdicom builds the returned SEG (pip install highdicom)")

PATIENT = Patient()
UID_ROOT = "1.2.826.0.1.3680043.10.999"
FHIR_PATIENT = {
    "resourceType": "Patient",
    "id": "hosp-pat-1",
    "identifier": [{"system": "urn:oid:1.2.3.4", "value": PATIENT.patient_id}],
    "name": [{"family": PATIENT.family, "given": [PATIENT.given]}],
    "birthDate": "1947-03-12",
}


def _app(tmp_path: Path) -> Flask:
    returns = {
        "uid_root": UID_ROOT,
        "dicom_store": {"type": "folder", "path": str(tmp_path / "clinical-pacs")},
        "fhir_store": {"type": "folder", "path": str(tmp_path / "clinical-fhir")},
    }
    return make_app(
        tmp_path / "data",
        destinations={
            "default": {"returns": returns},
            "other": {"require_signoff": False, "returns": returns},
        },
    )


def _partner(app: Flask, destination: str = "default") -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(gw(app).db, Role.PARTNER, None, destination)}"}


def _deliver(app: Flask, destination: str, images: list[pydicom.Dataset]) -> None:
    client = app.test_client()
    body, content_type = multipart(images)
    prefix = "" if destination == "default" else f"/d/{destination}"
    response = client.post(f"{prefix}/dicomweb/studies", data=body,
                           headers={**token(app, Role.SENDER), "Content-Type": content_type})
    assert response.status_code == 200, response.data
    response = client.post(f"{prefix}/fhir/Patient", data=json.dumps(FHIR_PATIENT),
                           headers={**token(app, Role.SENDER),
                                    "Content-Type": "application/fhir+json"})
    assert response.status_code == 202, response.data
    gw(app).jobs.drain(60)


def _delivered(tmp_path: Path, destination: str = "default") -> list[pydicom.Dataset]:
    root = tmp_path / "data" / "store" / destination
    return [pydicom.dcmread(p) for p in sorted(root.rglob("*.dcm"))]


def _return_seg(app: Flask, seg: pydicom.Dataset, headers: dict[str, str],
                destination: str = "default") -> Any:
    body, content_type = multipart([seg])
    return app.test_client().post(f"/d/{destination}/return/dicomweb/studies", data=body,
                                  headers={**headers, "Content-Type": content_type})


def _statuses(app: Flask, response: Any) -> dict[str, int]:
    job = response.headers["X-Job-Id"]
    status = app.test_client().get(f"/jobs/{job}", headers=token(app, Role.PRIVACY_OFFICER))
    return status.get_json()["counts"]  # type: ignore[no-any-return]


def test_seg_lands_on_the_original_study(tmp_path: Path) -> None:
    app = _app(tmp_path)
    originals = ct_series(PATIENT, "return-study")
    _deliver(app, "default", originals)
    delivered = _delivered(tmp_path)
    seg = seg_on(delivered)
    partner_uid = seg.SOPInstanceUID
    response = _return_seg(app, seg, _partner(app))
    assert response.status_code == 200, response.data
    gw(app).jobs.drain(60)
    assert _statuses(app, response) == {"forwarded": 1}
    (path,) = (tmp_path / "clinical-pacs").rglob("*.dcm")
    back = pydicom.dcmread(path)
    first = originals[0]
    assert back.StudyInstanceUID == first.StudyInstanceUID
    assert back.PatientID == PATIENT.patient_id and str(back.PatientName) == PATIENT.name
    assert back.PatientBirthDate == PATIENT.birth_date and back.AccessionNumber == PATIENT.accession
    assert back.StudyDate == PATIENT.study_date
    assert back.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert referenced_instances(back) == {o.SOPInstanceUID for o in originals}
    (series,) = back.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert back.SOPInstanceUID.startswith(UID_ROOT + ".") and back.SOPInstanceUID != partner_uid
    assert back.SeriesInstanceUID.startswith(UID_ROOT + ".")
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.SeriesDescription == "RESEARCH RESULT: AI lesion segmentation"
    assert back.ContributingEquipmentSequence[-1].Manufacturer == "deid-gateway"
    assert back.PatientIdentityRemoved == "NO" and "DeidentificationMethod" not in back
    # no pseudonym of the delivery is left anywhere in the clinical object
    text = str(back)
    for pseudo in [d.SOPInstanceUID for d in delivered] + [delivered[0].PatientID,
                                                           delivered[0].StudyInstanceUID]:
        assert pseudo not in text
    # nothing of the return reached the research store (no manifest, no file)
    assert len(_delivered(tmp_path)) == len(originals)


def test_observation_lands_on_the_original_patient(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _deliver(app, "default", ct_series(PATIENT, "obs-study", 1))
    (patient,) = [r for r in read_ndjson_dir(tmp_path / "data" / "store" / "default" / "fhir")
                  if r["resourceType"] == "Patient"]
    observation = observation_on(f"Patient/{patient['id']}")
    response = app.test_client().post("/d/default/return/fhir", data=json.dumps(observation),
                                      headers={**_partner(app),
                                               "Content-Type": "application/fhir+json"})
    assert response.status_code == 202, response.data
    gw(app).jobs.drain(60)
    assert _statuses(app, response) == {"forwarded": 1}
    (back,) = read_ndjson_dir(tmp_path / "clinical-fhir")
    assert back["subject"] == {"reference": "Patient/hosp-pat-1"}
    assert back["id"] != "partner-finding-1"
    assert {"system": "urn:deid-gateway:research-result", "code": "research-result"}.items() \
        <= back["meta"]["tag"][0].items()
    assert back["note"] == observation["note"] and back["valueString"] == observation["valueString"]


def test_unknown_pseudonym_is_quarantined_never_forwarded(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _deliver(app, "default", ct_series(PATIENT, "known-study", 2))
    stranger = seg_on(ct_series(Patient(patient_id="MRN000001"), "never-delivered", 2))
    response = _return_seg(app, stranger, _partner(app))
    assert response.status_code == 200
    gw(app).jobs.drain(60)
    assert _statuses(app, response) == {"quarantined": 1}
    (item,) = gw(app).review.listing()
    assert item["reason"] == "unknown-pseudonym"
    assert not (tmp_path / "clinical-pacs").exists() or not list((tmp_path / "clinical-pacs").rglob("*.dcm"))
    observation = observation_on("Patient/NOSUCHPSEUDONYM")
    response = app.test_client().post("/d/default/return/fhir", data=json.dumps(observation),
                                      headers={**_partner(app),
                                               "Content-Type": "application/fhir+json"})
    gw(app).jobs.drain(60)
    assert _statuses(app, response) == {"quarantined": 1}
    assert not (tmp_path / "clinical-fhir").exists() or not read_ndjson_dir(tmp_path / "clinical-fhir")


def test_another_destinations_pseudonym_is_quarantined(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _deliver(app, "other", ct_series(PATIENT, "other-study", 2))
    seg = seg_on(_delivered(tmp_path, "other"))
    response = _return_seg(app, seg, _partner(app, "default"))  # the wrong door
    gw(app).jobs.drain(60)
    assert _statuses(app, response) == {"quarantined": 1}
    assert [i["reason"] for i in gw(app).review.listing()] == ["foreign-pseudonym"]
    assert not list((tmp_path / "clinical-pacs").rglob("*.dcm")) if (tmp_path / "clinical-pacs").exists() else True


def test_only_a_partner_of_the_destination_may_return(tmp_path: Path) -> None:
    app = _app(tmp_path)
    seg = seg_on(ct_series(PATIENT, "any", 2))
    assert _return_seg(app, seg, _partner(app, "other")).status_code == 403
    assert _return_seg(app, seg, token(app, Role.SENDER)).status_code == 403
    assert _return_seg(app, seg, token(app, Role.HONEST_BROKER)).status_code == 403
    plain = make_app(tmp_path / "plain")  # a destination without returns: the door refuses
    assert _return_seg(plain, seg, _partner(plain)).status_code == 404
    assert io  # (keeps the import for multipart bodies)


def _kos_on(delivered: list[pydicom.Dataset], text: str = "") -> pydicom.Dataset:
    """A Key Object Selection document (as a partner's viewer writes it) citing the delivered
    instances in its evidence sequence and content."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    first = delivered[0]
    kos = Dataset()
    kos.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
    kos.SOPInstanceUID = generate_uid()
    kos.Modality = "KO"
    kos.SeriesInstanceUID = generate_uid()
    kos.SeriesNumber = 900
    kos.InstanceNumber = 1
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName"):
        setattr(kos, keyword, first.get(keyword, ""))
    kos.ValueType = "CONTAINER"
    kos.SeriesDescription = text
    instances = []
    for ds in delivered:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        instances.append(ref)
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence(instances)
    study = Dataset()
    study.StudyInstanceUID = first.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    kos.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = kos.SOPClassUID
    meta.MediaStorageSOPInstanceUID = kos.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    kos.file_meta = meta
    return kos


def test_kos_evidence_maps_back_and_partner_text_stays(tmp_path: Path) -> None:
    app = _app(tmp_path)
    originals = ct_series(PATIENT, "kos-study", 2)
    _deliver(app, "default", originals)
    delivered = _delivered(tmp_path)
    kos = _kos_on(delivered, "key images, see report 7")
    response = _return_seg(app, kos, _partner(app))
    gw(app).jobs.drain(60)
    assert _statuses(app, response) == {"forwarded": 1}
    (back,) = [pydicom.dcmread(p) for p in (tmp_path / "clinical-pacs").rglob("*.dcm")]
    (study,) = back.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == originals[0].StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == originals[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence} == {
        o.SOPInstanceUID for o in originals}
    assert back.SeriesDescription == "RESEARCH RESULT: key images, see report 7"
    # the patient's identity is in the patient module only: no value was written into text
    for elem in back.iterall():
        if elem.keyword not in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                                "StudyDate", "ReferringPhysicianName", "StudyDescription"):
            for phi in (PATIENT.family, PATIENT.given, PATIENT.patient_id, PATIENT.birth_date):
                assert phi not in str(elem.value), elem.keyword


def test_a_resend_stores_the_same_object(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _deliver(app, "default", ct_series(PATIENT, "resend-study", 2))
    seg = seg_on(_delivered(tmp_path))
    first = _return_seg(app, seg, _partner(app))
    gw(app).jobs.drain(60)
    second = _return_seg(app, seg, _partner(app))
    gw(app).jobs.drain(60)
    assert _statuses(app, first) == {"forwarded": 1}
    assert _statuses(app, second) in ({"forwarded": 1}, {"duplicate": 1})
    assert len(list((tmp_path / "clinical-pacs").rglob("*.dcm"))) == 1


def test_what_is_not_a_result_or_names_another_patient_is_quarantined(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _deliver(app, "default", ct_series(PATIENT, "odd-study", 2))
    delivered = _delivered(tmp_path)
    image = delivered[0].copy()  # a CT image is not a result
    wrong_patient = _kos_on(delivered)
    wrong_patient.PatientID = "SOMEONEELSE00001"
    for ds in (image, wrong_patient):
        _return_seg(app, ds, _partner(app))
    gw(app).jobs.drain(60)
    reasons = sorted(i["reason"] for i in gw(app).review.listing())
    assert reasons == ["unknown-pseudonym", "unsupported-input"]


def test_a_bundle_of_results_keeps_its_own_references(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _deliver(app, "default", ct_series(PATIENT, "bundle-study", 1))
    (patient,) = [r for r in read_ndjson_dir(tmp_path / "data" / "store" / "default" / "fhir")
                  if r["resourceType"] == "Patient"]
    observation = observation_on(f"Patient/{patient['id']}")
    report = {"resourceType": "DiagnosticReport", "id": "partner-report-1", "status": "final",
              "code": {"text": "AI read"}, "subject": {"reference": f"Patient/{patient['id']}"},
              "result": [{"reference": "urn:uuid:6b1f8a0e-3c55-4d8e-9f59-1a2b3c4d5e6f"}],
              "conclusion": "no change"}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:6b1f8a0e-3c55-4d8e-9f59-1a2b3c4d5e6f", "resource": observation},
        {"fullUrl": "urn:uuid:0d6c9e52-8a7b-4a5e-9d2c-7f1e2d3c4b5a", "resource": report}]}
    response = app.test_client().post("/d/default/return/fhir", data=json.dumps(bundle),
                                      headers={**_partner(app),
                                               "Content-Type": "application/fhir+json"})
    assert response.status_code == 202
    gw(app).jobs.drain(60)
    assert _statuses(app, response) == {"forwarded": 1}
    back = {r["resourceType"]: r for r in read_ndjson_dir(tmp_path / "clinical-fhir")}
    assert back["DiagnosticReport"]["result"] == [{"reference": f"Observation/{back['Observation']['id']}"}]
    assert back["DiagnosticReport"]["subject"] == {"reference": "Patient/hosp-pat-1"}
    assert back["DiagnosticReport"]["conclusion"] == "no change"


def test_a_clinical_folder_store_without_a_path_stops_the_start(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.errors import ConfigurationError
    from gateway.service import check_config

    config = load_config(data_dir=tmp_path / "data", destinations={"default": {"returns": {
        "uid_root": UID_ROOT, "dicom_store": {"type": "folder"}}}})
    with pytest.raises(ConfigurationError):
        check_config(config)
