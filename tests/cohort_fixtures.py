"""A hospital for the cohort export tests: patients with studies in a real PACS (Orthanc) and
resources in a real EHR (the FHIR test server), some inside the cohort and one outside, and
a counting proxy in front of the PACS's DICOMweb (every request that reaches Orthanc is
counted: the "no duplicate fetches" check counts real requests)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
import requests

from tests.dicom_fixtures import Patient, phi_instance
from tests.fhir_fixtures import MRN_SYSTEM

MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
RETRIEVE = re.compile(r".*/studies/[^/]+/series/[^/]+")
STUDY_SOURCES = ("CT_small.dcm", "MR_small.dcm")  # two series per study


@dataclass
class HospitalPatient:
    """One patient; ``studies`` original StudyInstanceUIDs -> their SeriesInstanceUIDs."""

    patient: Patient
    n_studies: int
    fhir_id: str
    studies: dict[str, list[str]] = field(default_factory=dict)
    accessions: list[str] = field(default_factory=list)

    @property
    def mrn(self) -> str:
        return self.patient.patient_id


def new_patient(family: str, n_studies: int) -> HospitalPatient:
    tag = uuid.uuid4().hex[:8].upper()
    patient = Patient(family=family, given="ROSALIND", patient_id=f"MRN{tag}",
                      accession=f"ACC{tag}", birth_date="19610704")  # fmt: skip
    return HospitalPatient(patient, n_studies, f"p-{tag.lower()}")


def instances_of(hp: HospitalPatient) -> Iterator[pydicom.Dataset]:
    for study in range(1, hp.n_studies + 1):
        for number, source in enumerate(STUDY_SOURCES, start=1):
            ds = phi_instance(source, hp.patient, f"{hp.mrn}-study-{study}", source[:2], number)
            del ds.IssuerOfPatientID  # the research profile's default namespace: linked to FHIR
            ds.AccessionNumber = f"{hp.patient.accession}{study}"
            yield ds


def load_pacs(orthanc: Any, patients: list[HospitalPatient]) -> None:
    """Every patient's studies into the PACS (Orthanc REST upload)."""
    for hp in patients:
        for ds in instances_of(hp):
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            orthanc.rest("POST", "/instances", data=buffer.getvalue())
            hp.studies.setdefault(ds.StudyInstanceUID, []).append(ds.SeriesInstanceUID)
            if ds.AccessionNumber not in hp.accessions:
                hp.accessions.append(ds.AccessionNumber)


def ehr_resources(hp: HospitalPatient) -> list[dict[str, Any]]:
    ref = {"reference": f"Patient/{hp.fhir_id}"}
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": hp.fhir_id,
         "identifier": [{"type": MR, "system": MRN_SYSTEM, "value": hp.mrn}],
         "name": [{"family": hp.patient.family.title(), "given": ["Rosalind"]}],
         "birthDate": "1961-07-04", "gender": "female"},
        {"resourceType": "Observation", "id": f"obs-{hp.fhir_id}", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
         "subject": ref, "effectiveDateTime": "2024-09-17T10:15:00Z",
         "valueQuantity": {"value": 168.0, "unit": "cm", "system": "http://unitsofmeasure.org",
                           "code": "cm"}},
        {"resourceType": "Condition", "id": f"cond-{hp.fhir_id}", "subject": ref,
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
         "recordedDate": "2024-09-01"},
    ]  # fmt: skip
    for study_uid, series in list(hp.studies.items())[:1]:
        resources.append({
            "resourceType": "ImagingStudy", "id": f"ims-{hp.fhir_id}", "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
            "subject": ref, "started": "2024-09-17T10:15:00Z",
            "series": [{"uid": s, "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                               "code": "CT"}} for s in dict.fromkeys(series)],
        })  # fmt: skip
    return resources


def load_ehr(fhir_server: Any, patients: list[HospitalPatient]) -> None:
    for hp in patients:
        for resource in ehr_resources(hp):
            url = f"{fhir_server.base_url}/{resource['resourceType']}/{resource['id']}"
            answer = requests.put(url, data=json.dumps(resource), timeout=30,
                                  headers={"Content-Type": "application/fhir+json"})  # fmt: skip
            assert answer.status_code in (200, 201), answer.text


# -- the counting proxy ----------------------------------------------------------------------
class CountingProxy:
    """Forwards GETs to ``upstream`` and counts each by its path (query string dropped)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.counts: Counter[str] = Counter()
        self.times: list[float] = []  # when each request arrived (time.monotonic)
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with proxy.lock:
                    proxy.counts[path] += 1
                    proxy.times.append(time.monotonic())
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept",)}
                try:
                    answer = requests.get(proxy.upstream + self.path, headers=headers, timeout=60)
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
                self.send_response(answer.status_code)
                for name in ("Content-Type",):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def retrieves(self) -> Counter[str]:
        """WADO-RS series retrieves: ``/studies/{uid}/series/{uid}`` -> count."""
        with self.lock:
            return Counter({p: n for p, n in self.counts.items() if RETRIEVE.fullmatch(p)})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def series_path(prefix: str, study_uid: str, series_uid: str) -> str:
    return f"{prefix}/studies/{study_uid}/series/{series_uid}"


def read_store(root: Path) -> dict[str, Any]:
    """The research store's content: DICOM (PatientID -> StudyInstanceUIDs, instances) and
    FHIR resources by type."""
    from tests.fhir_fixtures import read_ndjson_dir

    studies: dict[str, set[str]] = {}
    instances = 0
    for path in root.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        studies.setdefault(str(ds.PatientID), set()).add(str(ds.StudyInstanceUID))
        instances += 1
    by_type: dict[str, list[dict[str, Any]]] = {}
    fhir = root / "fhir"
    for resource in read_ndjson_dir(fhir) if fhir.exists() else []:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    return {"studies": studies, "instances": instances, "fhir": by_type}


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every data file of the store (same content, same tree); the
    per-job manifests are left out (named by the pipeline's random job ids)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "manifests"}  # fmt: skip
