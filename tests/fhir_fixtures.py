"""FHIR test inputs: the Synthea corpus, a linked DICOM + FHIR study, small builders.

Every value that identifies a patient is listed so tests can grep the output for it, base64
attachments decoded included.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.linkage.context import Linkage
from gateway.linkage.keys import load_key
from gateway.profiles import load_profile
from gateway.profiles.model import Profile

# beside the checkout (/work/main -> /work/shared) or beside a worktree folder (/work/wt/x)
SYNTHEA = next(
    (
        base / "shared/data/fhir-synthea-r4"
        for base in Path(__file__).resolve().parents[2:4]
        if (base / "shared/data/fhir-synthea-r4").is_dir()
    ),
    Path(__file__).resolve().parents[2] / "shared/data/fhir-synthea-r4",
)
MRN_SYSTEM = "http://hospital.smarthealthit.org"


def synthea_files() -> list[Path]:
    if not SYNTHEA.is_dir():
        pytest.skip(f"Synthea test data absent ({SYNTHEA})")
    files = sorted(SYNTHEA.glob("*.json"))
    if not files:
        pytest.skip("Synthea test data folder is empty")
    return files


def synthea_patient_bundles() -> list[Path]:
    return [p for p in synthea_files() if not p.name.startswith(("hospital", "practitioner"))]


def profile_with(name: str, **fhir_changes: Any) -> Profile:
    """A bundled profile with some ``fhir:`` settings changed (e.g. nlp off for speed)."""
    profile = load_profile(name)
    fhir = profile.fhir
    free_text_changes = fhir_changes.pop("free_text", None)
    if free_text_changes:
        fhir = fhir.model_copy(
            update={"free_text": fhir.free_text.model_copy(update=free_text_changes)}
        )
    if fhir_changes:
        fhir = fhir.model_copy(update=fhir_changes)
    return profile.model_copy(update={"fhir": fhir})


def linkage_for(profile: Profile) -> Linkage:
    """Key from DEID_GATEWAY_KEY (set by the conftest fixture): no key file is created."""
    return Linkage(profile, load_key(profile.linkage.key_id, create=False))


def patient_phi(patient: dict[str, Any]) -> list[str]:
    """Names, address lines, phones, SSN, MRN, passport, licence, birth date of a Patient."""
    out: list[str] = []
    for name in patient.get("name", []):
        out += [*name.get("given", []), name.get("family", "")]
    for extension in patient.get("extension", []):
        if "maiden" in extension.get("url", "").lower():
            out += extension["valueString"].split()
    for address in patient.get("address", []):
        out += address.get("line", [])
    out += [t["value"] for t in patient.get("telecom", [])]
    out += [i["value"] for i in patient.get("identifier", [])]
    out.append(patient["birthDate"])
    return [s for s in out if s]


def walk_strings(obj: Any) -> Iterator[str]:
    """Every string of a JSON value, with base64 ``data`` decoded as well."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "data" and isinstance(value, str):
                try:
                    yield base64.b64decode(value).decode("utf-8", "replace")
                except ValueError:
                    pass
            yield key
            yield from walk_strings(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from walk_strings(item)
    elif isinstance(obj, str):
        yield obj


def read_ndjson_dir(directory: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(directory.rglob("*.ndjson")):
        with open(path, encoding="utf-8") as fh:
            out += [json.loads(line) for line in fh if line.strip()]
    return out


# -- the linked study ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkedStudy:
    mrn: str = "MRN-7734-2291"
    family: str = "Quellwater"
    given: str = "Annabeth"
    birth_date: str = "1958-11-04"
    phone: str = "555-301-7788"
    line: str = "44 Harrowgate Lane"
    study_uid: str = "1.2.826.0.1.3680043.10.1234.77.1"
    series_uid: str = "1.2.826.0.1.3680043.10.1234.77.1.1"
    sop_uid: str = "1.2.826.0.1.3680043.10.1234.77.1.1.1"
    accession: str = "ACC-55310"
    study_date: str = "20210315"  # DICOM DA
    study_datetime: str = "2021-03-15T09:30:00+01:00"

    def phi_strings(self) -> list[str]:
        return [self.mrn, self.family, self.given, self.birth_date, self.phone, self.line,
                self.accession, self.study_uid, self.series_uid, self.sop_uid]  # fmt: skip


def linked_dicom(study: LinkedStudy, path: Path) -> Path:
    """pydicom's CT_small with this patient's identifiers, written to ``path``."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = study.mrn
    ds.PatientName = f"{study.family}^{study.given}"
    ds.PatientBirthDate = study.birth_date.replace("-", "")
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = study.series_uid
    ds.SOPInstanceUID = study.sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = study.sop_uid
    ds.AccessionNumber = study.accession
    ds.StudyDate = study.study_date
    if "IssuerOfPatientID" in ds:
        del ds.IssuerOfPatientID
    ds.save_as(path)
    return path


def linked_bundle(study: LinkedStudy) -> dict[str, Any]:
    """Patient, ServiceRequest, ImagingStudy, DiagnosticReport, Observation for the study."""
    pid = "urn:uuid:6f1c2a0e-3b7d-4a55-9b8e-0c1d2e3f4a5b"
    sr = "urn:uuid:0b7e2c44-1f0a-4c1e-8a9d-7e6f5d4c3b2a"
    ims = "urn:uuid:9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
    obs = "urn:uuid:1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"
    dr = "urn:uuid:2b3c4d5e-6f7a-4b2c-9d3e-4f5a6b7c8d9e"
    note = f"CT chest for {study.given} {study.family} (MRN {study.mrn}), study {study.study_uid}."

    def entry(url: str, resource: dict[str, Any]) -> dict[str, Any]:
        return {"fullUrl": url, "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]}}  # fmt: skip

    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry(pid, {
                "resourceType": "Patient", "id": "6f1c2a0e-3b7d-4a55-9b8e-0c1d2e3f4a5b",
                "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                                "system": MRN_SYSTEM, "value": study.mrn}],
                "name": [{"family": study.family, "given": [study.given]}],
                "telecom": [{"system": "phone", "value": study.phone}],
                "address": [{"line": [study.line], "city": "Springfield", "state": "MA", "postalCode": "01103"}],
                "birthDate": study.birth_date,
            }),
            entry(sr, {
                "resourceType": "ServiceRequest", "status": "completed", "intent": "order",
                "identifier": [{"system": "http://hospital.example.org/accession", "value": study.accession}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "CT Chest"}]},
                "subject": {"reference": pid, "display": f"{study.given} {study.family}"},
                "authoredOn": "2021-03-10",
            }),
            entry(ims, {
                "resourceType": "ImagingStudy", "status": "available",
                "identifier": [
                    {"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_uid}"},
                    {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                     "system": "http://hospital.example.org/accession", "value": study.accession},
                ],
                "subject": {"reference": pid},
                "basedOn": [{"reference": sr}],
                "started": study.study_datetime,
                "numberOfSeries": 1, "numberOfInstances": 1,
                "series": [{
                    "uid": study.series_uid, "number": 1,
                    "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
                    "started": study.study_datetime,
                    "instance": [{"uid": study.sop_uid,
                                  "sopClass": {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}}],
                }],
            }),
            entry(obs, {
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}]},
                "subject": {"reference": f"Patient?identifier={MRN_SYSTEM}|{study.mrn}"},
                "effectiveDateTime": study.study_datetime,
                "valueQuantity": {"value": 172.0, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
            }),
            entry(dr, {
                "resourceType": "DiagnosticReport", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2"}]},
                "subject": {"reference": pid},
                "imagingStudy": [{"reference": ims}],
                "result": [{"reference": obs}],
                "effectiveDateTime": study.study_datetime,
                "conclusion": note,
                "presentedForm": [{"contentType": "text/plain",
                                   "data": base64.b64encode(note.encode()).decode()}],
            }),
        ],
    }  # fmt: skip
