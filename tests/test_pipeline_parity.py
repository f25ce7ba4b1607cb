"""One pipeline: the same mixed corpus through ``deidentify`` (the directory intake) and through
``serve`` (STOW-RS + FHIR REST + C-STORE) gives byte-identical DICOM, the same FHIR resources and
the same reason code for every bad input.

The corpus is made here from pydicom's sample images: two studies of two patients (one linked
to a FHIR transaction Bundle), an NDJSON export of a third patient, and one bad input of every
kind: not DICOM, truncated DICOM, FHIR that does not validate, and an Observation whose Patient
never arrives.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from tests.fhir_fixtures import LinkedStudy, linked_bundle, linked_dicom
from tests.server_process import free_port
from tests.service_helpers import multipart
from tests.test_service_crash import (
    GatewayProcess,
    cli,
    create_token,
    service_env,
    write_config,
)

pytestmark = pytest.mark.slow

NDJSON_MRN_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1234.99"


def _instances(sample: str, patient: str, mrn: str, study: str, count: int) -> list[pydicom.Dataset]:
    out = []
    for i in range(count):
        ds = pydicom.dcmread(get_testdata_file(sample))
        ds.PatientName, ds.PatientID = patient, mrn
        ds.InstitutionName = "Parity General Hospital"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = f"{study}.1"
        ds.SOPInstanceUID = f"{study}.1.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        out.append(ds)
    return out


def _observation(i: int, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": f"obs-{i}", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": f"2022-06-0{i}", "valueQuantity": {"value": 60 + i, "unit": "/min"},
    }  # fmt: skip


def _corpus(root: Path) -> dict[str, Any]:
    """The files of the corpus, and what each door sends."""
    root.mkdir(parents=True)
    study = LinkedStudy()
    stow = [pydicom.dcmread(linked_dicom(study, root / "linked.dcm"))]
    stow += _instances("CT_small.dcm", "Brightwater^Odile", "PAR-100", "1.2.826.0.1.3680043.10.1234.81", 3)
    cstore = _instances("MR_small.dcm", "Featherstone^Amos", "PAR-200", "1.2.826.0.1.3680043.10.1234.82", 2)
    for n, ds in enumerate(stow[1:] + cstore):
        ds.save_as(root / f"instance-{n}.dcm", enforce_file_format=True)

    bundle = linked_bundle(study)
    (root / "linked-bundle.json").write_text(json.dumps(bundle))
    patient = {"resourceType": "Patient", "id": "nd-1",
               "identifier": [{"system": NDJSON_MRN_SYSTEM, "value": "ND-300"}],
               "name": [{"family": "Lindqvist", "given": ["Maren"]}], "birthDate": "1971-02-03"}
    lines = [patient, _observation(1, "nd-1"), _observation(2, "nd-1")]
    ndjson = "".join(json.dumps(r) + "\n" for r in lines)
    (root / "export.ndjson").write_text(ndjson)

    bad = {}
    (root / "notes.txt").write_text("Ward round notes: nothing to see here.\n")
    bad["notes.txt"] = "not-dicom"
    whole = (root / "instance-0.dcm").read_bytes()
    truncated = whole[: len(whole) - 4000]  # cut inside the pixel data: the header still reads
    (root / "truncated.dcm").write_bytes(truncated)
    bad["truncated.dcm"] = "truncated"
    invalid = copy.deepcopy(bundle)
    invalid["id"] = "bundle-invalid"
    for entry in invalid["entry"]:
        if entry["resource"]["resourceType"] == "ImagingStudy":
            entry["resource"]["started"] = "not a date"
    (root / "invalid-bundle.json").write_text(json.dumps(invalid))
    bad["invalid-bundle.json"] = "fhir-invalid"
    orphan = _observation(9, "nobody-knows")
    (root / "orphan.json").write_text(json.dumps(orphan))
    bad["orphan.json"] = "unresolved-patient"
    return {
        "stow": stow, "cstore": cstore, "bundle": bundle, "ndjson": ndjson, "bad": bad,
        "truncated": truncated, "invalid": invalid, "orphan": orphan,
    }


def _dicom_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.dcm"))}


def _fhir_resources(root: Path) -> list[str]:
    lines = []
    for part in sorted((root / "fhir").rglob("*.ndjson")):
        lines += [json.dumps(json.loads(line), sort_keys=True) for line in part.read_text().splitlines()]
    return sorted(lines)


def _cli_run(corpus_dir: Path, out: Path, env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run(
        [*cli(), "deidentify", "--input", str(corpus_dir), "--output", str(out)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 1, done.stderr[-3000:]  # some quarantined, none lost
    assert "Traceback" not in done.stderr
    reasons = {}
    for line in done.stderr.splitlines():
        if ": quarantined (" in line:
            source, _, rest = line.partition(": quarantined (")
            reasons[Path(source).name] = rest.split(")", 1)[0]
    return reasons


def _wait_jobs(server: GatewayProcess, token: str, jobs: list[str], timeout: float = 120) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = {j: requests.get(f"{server.url}/jobs/{j}", headers=headers, timeout=10).json() for j in jobs}
        if all(s["done"] for s in status.values()):
            return status
        time.sleep(0.3)
    raise AssertionError(f"jobs not done: {status}")


def _cstore(port: int, datasets: list[pydicom.Dataset]) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title="PARITYSCU")
    ae.add_requested_context(MRImageStorage, [str(datasets[0].file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title="DEIDGW")
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status.Status == 0x0000
    finally:
        assoc.release()


def test_cli_and_service_give_the_same_result(tmp_path: Path) -> None:
    corpus_dir = tmp_path / "corpus"
    corpus = _corpus(corpus_dir)
    env = service_env(tmp_path / "home")

    cli_out = tmp_path / "cli-out"
    cli_reasons = _cli_run(corpus_dir, cli_out, env)
    assert cli_reasons == corpus["bad"]

    data_dir = tmp_path / "data"
    dimse_port = free_port()
    config = write_config(
        tmp_path / "gateway.yaml", data_dir, workers=1,
        identity={"pending_seconds": 3},
        destinations={"default": {"profile": "research"}},  # the CLI's default
        dimse={"enabled": True, "host": "127.0.0.1", "port": dimse_port, "ae_title": "DEIDGW"},
    )
    token = create_token(config, env)
    headers = {"Authorization": f"Bearer {token}"}
    server = GatewayProcess(config, env, tmp_path / "serve.log").start()
    try:
        jobs = []
        body, content_type = multipart(corpus["stow"])
        answer = requests.post(f"{server.url}/dicomweb/studies", data=body, timeout=60,
                               headers={**headers, "Content-Type": content_type})
        assert answer.status_code == 200, answer.text
        jobs.append(answer.headers["X-Job-Id"])
        _cstore(dimse_port, corpus["cstore"])

        fhir = {**headers, "Content-Type": "application/fhir+json"}
        for obj in (corpus["bundle"], corpus["invalid"]):
            answer = requests.post(f"{server.url}/fhir", data=json.dumps(obj), headers=fhir, timeout=60)
            assert answer.status_code == 202, answer.text
            jobs.append(answer.headers["X-Job-Id"])
        answer = requests.post(f"{server.url}/fhir", data=corpus["ndjson"], timeout=60,
                               headers={**headers, "Content-Type": "application/fhir+ndjson"})
        assert answer.status_code == 202, answer.text
        jobs.append(answer.headers["X-Job-Id"])
        answer = requests.post(f"{server.url}/fhir/Observation", data=json.dumps(corpus["orphan"]),
                               headers=fhir, timeout=60)
        jobs.append(answer.headers["X-Job-Id"])

        # the bad DICOM inputs through STOW-RS: refused at the door or quarantined, by reason
        service_reasons: dict[str, str] = {}
        not_dicom = (corpus_dir / "notes.txt").read_bytes()
        body, content_type = multipart([], [("application/dicom", not_dicom)])
        refused = requests.post(f"{server.url}/dicomweb/studies", data=body, timeout=60,
                                headers={**headers, "Content-Type": content_type})
        assert refused.status_code == 409
        (failed,) = refused.json()["00081198"]["Value"]
        service_reasons["notes.txt"] = failed["00000902"]["Value"][0]
        body, content_type = multipart([], [("application/dicom", corpus["truncated"])])
        answer = requests.post(f"{server.url}/dicomweb/studies", data=body, timeout=60,
                               headers={**headers, "Content-Type": content_type})
        assert answer.status_code == 200, answer.text
        truncated_job = answer.headers["X-Job-Id"]

        status = _wait_jobs(server, token, [*jobs, truncated_job])
        (q,) = status[truncated_job]["quarantined"]
        service_reasons["truncated.dcm"] = q["reason"]
        (q,) = status[jobs[2]]["quarantined"]
        service_reasons["invalid-bundle.json"] = q["reason"]
        (q,) = status[jobs[4]]["quarantined"]
        service_reasons["orphan.json"] = q["reason"]
        for job in jobs[:2] + [jobs[1], jobs[3]]:
            assert status[job]["quarantined"] == [], status[job]
    finally:
        server.kill()

    store = data_dir / "store" / "default"
    assert service_reasons == cli_reasons
    cli_dicom, service_dicom = _dicom_tree(cli_out), _dicom_tree(store)
    assert len(cli_dicom) == len(corpus["stow"]) + len(corpus["cstore"])
    assert sorted(cli_dicom) == sorted(service_dicom)
    different = [name for name in cli_dicom if cli_dicom[name] != service_dicom[name]]
    assert different == [], "DICOM outputs differ between the CLI and the service"
    cli_fhir, service_fhir = _fhir_resources(cli_out), _fhir_resources(store)
    assert len(cli_fhir) == len(corpus["bundle"]["entry"]) + 3
    assert cli_fhir == service_fhir
