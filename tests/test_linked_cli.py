"""The reason the project exists: DICOM today in one process, FHIR tomorrow in another, joined.

Two separate CLI invocations (subprocesses) with the same key: the FHIR ImagingStudy's UIDs,
the Patient's identifier, the accession number and the date shift equal the DICOM output's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import yaml

from tests.dicom_fixtures import Patient, write_study

PATIENT = Patient()
MRN_SYSTEM = "http://hospital.smarthealthit.org"


def linked_profile(tmp_path: Path) -> Path:
    source = Path(__file__).resolve().parents[1] / "profiles" / "research.yaml"
    data = yaml.safe_load(source.read_text())
    data["name"] = "research-linked"
    data["linkage"]["identity"]["namespaces"][0]["dicom_issuers"] = [PATIENT.issuer]
    path = tmp_path / "linked.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fhir_bundle(study: pydicom.Dataset, series: list[pydicom.Dataset]) -> dict:
    patient_ref = "urn:uuid:6f1d2c3b-1111-4a4a-8b8b-000000000001"
    sr_ref = "urn:uuid:6f1d2c3b-1111-4a4a-8b8b-000000000002"
    started = f"{PATIENT.study_date[:4]}-{PATIENT.study_date[4:6]}-{PATIENT.study_date[6:]}T10:15:00Z"
    accession = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
        "system": "http://hospital.smarthealthit.org/accession",
        "value": PATIENT.accession,
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_ref,
                "resource": {
                    "resourceType": "Patient",
                    "id": "pat-holloway",
                    "identifier": [
                        {
                            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                            "system": MRN_SYSTEM,
                            "value": PATIENT.patient_id,
                        }
                    ],
                    "name": [{"family": PATIENT.family.title(), "given": [PATIENT.given.title()]}],
                    "birthDate": f"{PATIENT.birth_date[:4]}-{PATIENT.birth_date[4:6]}-{PATIENT.birth_date[6:]}",
                    "telecom": [{"system": "phone", "value": PATIENT.phone}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": sr_ref,
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "completed",
                    "intent": "order",
                    "identifier": [accession],
                    "subject": {"reference": patient_ref},
                    "authoredOn": started,
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {
                "fullUrl": "urn:uuid:6f1d2c3b-1111-4a4a-8b8b-000000000003",
                "resource": {
                    "resourceType": "ImagingStudy",
                    "status": "available",
                    "identifier": [
                        {"system": "urn:dicom:uid", "value": f"urn:oid:{study.StudyInstanceUID}"},
                        accession,
                    ],
                    "subject": {"reference": patient_ref},
                    "basedOn": [{"reference": sr_ref}],
                    "started": started,
                    "series": [
                        {
                            "uid": s.SeriesInstanceUID,
                            "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": s.Modality},
                            "instance": [
                                {
                                    "uid": s.SOPInstanceUID,
                                    "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{s.SOPClassUID}"},
                                }
                            ],
                        }
                        for s in series
                    ],
                },
                "request": {"method": "POST", "url": "ImagingStudy"},
            },
            {
                "fullUrl": "urn:uuid:6f1d2c3b-1111-4a4a-8b8b-000000000004",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                    "subject": {"reference": patient_ref},
                    "effectiveDateTime": started,
                    "valueQuantity": {"value": 171, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": "urn:uuid:6f1d2c3b-1111-4a4a-8b8b-000000000005",
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2"}]},
                    "subject": {"reference": patient_ref},
                    "effectiveDateTime": started,
                    "imagingStudy": [{"reference": "urn:uuid:6f1d2c3b-1111-4a4a-8b8b-000000000003"}],
                    "result": [{"reference": "urn:uuid:6f1d2c3b-1111-4a4a-8b8b-000000000004"}],
                    "conclusion": f"No change since prior for {PATIENT.given.title()} {PATIENT.family.title()}.",
                },
                "request": {"method": "POST", "url": "DiagnosticReport"},
            },
        ],
    }


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "deidentify", "--quiet", *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


def test_dicom_and_fhir_in_separate_runs_join(tmp_path: Path) -> None:
    profile = linked_profile(tmp_path)
    dicom_in, fhir_in = tmp_path / "dicom", tmp_path / "fhir"
    paths = write_study(dicom_in, PATIENT, sources=("CT_small.dcm", "MR_small.dcm"))
    originals = [pydicom.dcmread(p) for p in paths]
    fhir_in.mkdir()
    (fhir_in / "bundle.json").write_text(json.dumps(fhir_bundle(originals[0], originals)))
    env = dict(os.environ)
    out_dicom, out_fhir = tmp_path / "out-dicom", tmp_path / "out-fhir"

    first = cli("--input", str(dicom_in), "--output", str(out_dicom), "--profile", str(profile), env=env)
    assert first.returncode == 0, first.stderr
    second = cli("--input", str(fhir_in), "--output", str(out_fhir), "--profile", str(profile), env=env)
    assert second.returncode == 0, second.stderr

    dicom = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in out_dicom.rglob("*.dcm"))}
    assert len(dicom) == 2
    any_ds = next(iter(dicom.values()))
    resources = {}
    for ndjson in (out_fhir / "fhir").rglob("*.ndjson"):
        for line in ndjson.read_text().splitlines():
            resource = json.loads(line)
            resources.setdefault(resource["resourceType"], []).append(resource)
    (study,) = resources["ImagingStudy"]
    (patient,) = resources["Patient"]
    (request,) = resources["ServiceRequest"]

    study_ids = [i["value"] for i in study["identifier"] if i.get("system") == "urn:dicom:uid"]
    assert study_ids == [f"urn:oid:{any_ds.StudyInstanceUID}"]
    assert {s["uid"] for s in study["series"]} == {ds.SeriesInstanceUID for ds in dicom.values()}
    assert {i["uid"] for s in study["series"] for i in s["instance"]} == set(dicom)
    assert any(i["value"] == any_ds.PatientID for i in patient["identifier"])
    assert any(i.get("value") == any_ds.AccessionNumber for i in request["identifier"])
    assert any(i.get("value") == any_ds.AccessionNumber for i in study["identifier"])
    dicom_shift = (dt.datetime.strptime(any_ds.StudyDate, "%Y%m%d").date()
                   - dt.datetime.strptime(PATIENT.study_date, "%Y%m%d").date())
    fhir_shift = (dt.date.fromisoformat(study["started"][:10])
                  - dt.date.fromisoformat(f"{PATIENT.study_date[:4]}-{PATIENT.study_date[4:6]}-{PATIENT.study_date[6:]}"))
    assert dicom_shift == fhir_shift and dicom_shift.days != 0
    (observation,) = resources["Observation"]
    (report,) = resources["DiagnosticReport"]
    patient_ref = f"Patient/{patient['id']}"
    assert observation["subject"]["reference"] == report["subject"]["reference"] == patient_ref
    assert study["subject"]["reference"] == patient_ref
    for dated in (observation, report):
        assert (dt.date.fromisoformat(dated["effectiveDateTime"][:10])
                - dt.date.fromisoformat(study["started"][:10])).days == 0  # same shift as DICOM
    assert report["imagingStudy"][0]["reference"] == f"ImagingStudy/{study['id']}"
    text = json.dumps(resources)
    for phi in (PATIENT.family.title(), PATIENT.patient_id, PATIENT.accession, PATIENT.phone,
                originals[0].StudyInstanceUID):
        assert phi not in text
