"""FHIR and DICOM of the same study come out joined: UIDs, patient id, accession, date shift.

The DICOM side is computed from a real DICOM file (pydicom's CT_small with this patient's
identifiers) through the linkage API exactly as the DICOM de-identifier does; the FHIR side is
de-identified in a *separate process* with the same key, so nothing is shared but the key.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest

from gateway.fhir.bundle import deidentify_fhir
from gateway.linkage.dates import shift_dicom_date
from tests.fhir_fixtures import (
    LinkedStudy,
    linkage_for,
    linked_bundle,
    linked_dicom,
    profile_with,
    walk_strings,
)

REPO = Path(__file__).resolve().parents[1]
STUDY = LinkedStudy()


def _by_type(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def _fhir_in_other_process(tmp_path: Path, profile: str) -> dict[str, Any]:
    source = tmp_path / "in.json"
    source.write_text(json.dumps(linked_bundle(STUDY)))
    target = tmp_path / "out.json"
    code = (
        "import json,sys; from pathlib import Path;"
        "from gateway.fhir.bundle import deidentify_fhir;"
        "from tests.fhir_fixtures import profile_with, linkage_for;"
        f"p=profile_with({profile!r}, free_text={{'nlp': False}});"
        "out=deidentify_fhir(json.loads(Path(sys.argv[1]).read_text()), p, linkage_for(p));"
        "Path(sys.argv[2]).write_text(json.dumps(out))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "-c", code, str(source), str(target)], check=True, env=env, cwd=REPO
    )
    return json.loads(target.read_text())


@pytest.fixture(scope="module")
def dicom_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linked_dicom(STUDY, tmp_path_factory.mktemp("dicom") / "ct.dcm")


@pytest.mark.parametrize("profile_name", ["research", "safe-harbor"])
def test_fhir_output_joins_the_dicom(dicom_file: Path, tmp_path: Path, profile_name: str) -> None:
    profile = profile_with(profile_name, free_text={"nlp": False})
    linkage = linkage_for(profile)
    ds = pydicom.dcmread(dicom_file)
    p = linkage.pseudonymizer
    dicom_person = linkage.person(
        linkage.identity.from_dicom(str(ds.PatientID), ds.get("IssuerOfPatientID"))
    )

    out = _fhir_in_other_process(tmp_path, profile_name)
    patient = _by_type(out, "Patient")
    study = _by_type(out, "ImagingStudy")
    request = _by_type(out, "ServiceRequest")

    # patient: identifier value and id are the DICOM PatientID pseudonym
    mrns = [i for i in patient["identifier"] if i["system"] == "http://hospital.smarthealthit.org"]
    assert [i["value"] for i in mrns] == [dicom_person.patient_id]
    assert patient["id"] == dicom_person.patient_id
    # UIDs
    assert {"system": "urn:dicom:uid", "value": "urn:oid:" + p.uid(ds.StudyInstanceUID)} in study[
        "identifier"
    ]
    assert study["series"][0]["uid"] == p.uid(ds.SeriesInstanceUID)
    assert study["series"][0]["instance"][0]["uid"] == p.uid(ds.SOPInstanceUID)
    # the SOP class is a standard UID, not PHI: kept
    assert (
        study["series"][0]["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.2"
    )
    # accession (ImagingStudy ACSN identifier and ServiceRequest identifier)
    acsn = [i for i in study["identifier"] if i.get("type")]
    assert [i["value"] for i in acsn] == [p.accession(str(ds.AccessionNumber))]
    assert request["identifier"][0]["value"] == p.accession(str(ds.AccessionNumber))
    # dates: the same per-patient offset (or the same year) as DICOM StudyDate
    if linkage.shifts_dates:
        dicom_date = shift_dicom_date(str(ds.StudyDate), dicom_person.date_offset_days)
        assert dicom_date is not None
        fhir_date = study["started"][:10].replace("-", "")
        assert fhir_date == dicom_date
        original = dt.date.fromisoformat(STUDY.study_datetime[:10])
        assert dt.date.fromisoformat(study["started"][:10]) - original == dt.timedelta(
            days=dicom_person.date_offset_days
        )
        assert study["started"][10:] == STUDY.study_datetime[10:]  # time and zone kept
    else:
        assert study["started"] == STUDY.study_datetime[:4]
    # every resource that refers to the patient refers to Patient's fullUrl, conditional
    # references to the MRN become the literal Patient/<DICOM PatientID>
    observation = _by_type(out, "Observation")
    assert observation["subject"]["reference"] == f"Patient/{dicom_person.patient_id}"
    # nothing of the original identifiers is left anywhere
    text = "\n".join(walk_strings(out))
    for value in STUDY.phi_strings():
        assert value not in text


def test_same_key_same_output_across_processes(tmp_path: Path) -> None:
    profile = profile_with("research", free_text={"nlp": False})
    here = deidentify_fhir(linked_bundle(STUDY), profile, linkage_for(profile))
    there = _fhir_in_other_process(tmp_path, "research")
    assert here == there


def test_other_key_other_pseudonyms(monkeypatch: pytest.MonkeyPatch) -> None:
    profile = profile_with("research", free_text={"nlp": False})
    first = deidentify_fhir(linked_bundle(STUDY), profile, linkage_for(profile))
    monkeypatch.setenv("DEID_GATEWAY_KEY", "another-key-" + "fedcba9876543210" * 3)
    second = deidentify_fhir(linked_bundle(STUDY), profile, linkage_for(profile))
    assert _by_type(first, "Patient")["id"] != _by_type(second, "Patient")["id"]
    assert _by_type(first, "ImagingStudy")["series"] != _by_type(second, "ImagingStudy")["series"]


def test_r5_imaging_study_accession_and_endpoint() -> None:
    from gateway.fhir.validation import validation_issues
    from gateway.profiles.fhir_model import FhirVersion

    profile = profile_with("research", version=FhirVersion.R5, free_text={"nlp": False})
    linkage = linkage_for(profile)
    p = linkage.pseudonymizer
    study = {
        "resourceType": "ImagingStudy", "id": "i1", "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY.study_uid}"}],
        "basedOn": [{"identifier": {"system": "http://h/acc", "value": STUDY.accession}}],
        "subject": {"reference": "Patient/p1"},
        "started": STUDY.study_datetime,
        "endpoint": [{"reference": "Endpoint/e1"}],
        "series": [{"uid": STUDY.series_uid, "modality": {"coding": [{"code": "CT"}]},
                    "instance": [{"uid": STUDY.sop_uid,
                                  "sopClass": {"system": "urn:ietf:rfc:3986",
                                               "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}}]}],
    }  # fmt: skip
    endpoint = {
        "resourceType": "Endpoint", "id": "e1", "status": "active",
        "connectionType": [{"coding": [{"code": "dicom-wado-rs"}]}],
        "address": "https://pacs.hospital.example.org/wado",
    }  # fmt: skip
    out = deidentify_fhir(study, profile, linkage)
    assert out["basedOn"][0]["identifier"]["value"] == p.accession(STUDY.accession)
    assert out["series"][0]["uid"] == p.uid(STUDY.series_uid)
    assert validation_issues(out, FhirVersion.R5) == []
    ep = deidentify_fhir(endpoint, profile, linkage)
    assert ep["address"] == "https://research.example.org/dicomweb"
    assert out["endpoint"][0]["reference"] == f"Endpoint/{ep['id']}"


def test_auto_version_reads_r4_and_r5() -> None:
    from gateway.fhir.bundle import engine_for
    from gateway.fhir.references import ReferenceMode
    from gateway.fhir.resolver import InMemoryPatientIndex
    from gateway.profiles.fhir_model import FhirVersion

    profile = profile_with("research", version=FhirVersion.AUTO, free_text={"nlp": False})
    linkage = linkage_for(profile)
    engine = engine_for(profile, linkage)
    mapper = engine.mapper(InMemoryPatientIndex(linkage.identity))
    r4 = {"resourceType": "ImagingStudy", "id": "a", "status": "available",
          "subject": {"reference": "Patient/p"},
          "series": [{"uid": STUDY.series_uid, "modality": {"code": "CT"}}]}  # fmt: skip
    r5 = {**r4, "series": [{"uid": STUDY.series_uid, "modality": {"coding": [{"code": "CT"}]}}]}
    out4 = engine.resource(r4, mapper, ReferenceMode.FLAT)
    out5 = engine.resource(r5, mapper, ReferenceMode.FLAT)
    assert (out4.version, out5.version) == (FhirVersion.R4, FhirVersion.R5)
    assert out4.resource["series"][0]["uid"] == out5.resource["series"][0]["uid"]
