"""A folder destination is one folder: its DICOM, its FHIR and its delivery manifests.

``store: {type: folder, path: P}`` names where the researcher's data goes. The destination
had two store objects on that one folder (one for DICOM, one for FHIR), so the worker wrote
every delivery's manifest twice, to the same file: a file creation and a rename per delivery
for nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from gateway.persistence.models import Kind
from gateway.stores.folder import FolderStore
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app

PATIENT = Patient(family="LINDQVIST", given="AGNETA", patient_id="MRN4410097", issuer="")


def _bytes(ds: pydicom.Dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_fhir_and_manifests_of_a_folder_destination_all_land_in_its_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    put_manifest = FolderStore.put_manifest

    def counted(self: FolderStore, delivery: str, manifest: dict[str, object]) -> None:
        written.append(delivery)
        put_manifest(self, delivery, manifest)

    monkeypatch.setattr(FolderStore, "put_manifest", counted)
    research = tmp_path / "research-partner"
    app = make_app(
        tmp_path / "data",
        destinations={"default": {"profile": "basic", "store": {"type": "folder", "path": str(research)}}},
    )
    jobs = gw(app).jobs
    patient = {
        "resourceType": "Patient",
        "id": "pat-4410097",
        "identifier": [{"system": "http://hospital.example/mrn", "value": PATIENT.patient_id}],
        "name": [{"family": "Lindqvist", "given": ["Agneta"]}],
    }
    fhir = jobs.accept("default", Kind.FHIR, "test", [json.dumps(patient).encode()])
    dicom = jobs.accept(
        "default", Kind.DICOM, "test", [_bytes(phi_instance("CT_small.dcm", PATIENT, "fd-study", "CT", 1))]
    )
    jobs.drain(60)
    assert jobs.status_counts() == {"forwarded": 2}

    assert len(list(research.rglob("*.dcm"))) == 1
    assert len(list((research / "fhir").rglob("*.ndjson"))) == 1, "FHIR is not in the folder"
    manifests = sorted(p.stem for p in (research / "manifests").glob("*.json"))
    assert manifests == sorted([fhir.job_id, dicom.job_id])
    assert sorted(written) == manifests, "a delivery's manifest written more than once"
    default_folder = tmp_path / "data" / "store" / "default"
    assert not [p for p in default_folder.rglob("*") if p.is_file()], "data outside the folder"
