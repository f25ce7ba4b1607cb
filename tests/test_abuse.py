"""Hostile requests against a running ``deid-gateway serve`` (issue 13, "Abuse"): every one is
answered 4xx with a reason (never 500), and the service keeps serving.

Deep JSON on every FHIR door and the preview, 10,000 nested DICOM sequences, invalid query
parameters, a boundary string inside an instance, STOW-RS of another study to
``/studies/{study}``, a forged Host header.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import multipart
from tests.test_service_crash import GatewayProcess, create_token, service_env, write_config

PATIENT = Patient()
PUBLIC_URL = "https://gateway.example.org:8443"


class Served:
    def __init__(self, process: GatewayProcess, sender: str, officer: str, data_dir: Path) -> None:
        self.process = process
        self.url = process.url
        self.sender = {"Authorization": f"Bearer {sender}"}
        self.officer = {"Authorization": f"Bearer {officer}"}
        self.data_dir = data_dir

    def post(self, path: str, body: bytes, content_type: str, **headers: str) -> requests.Response:
        return requests.post(f"{self.url}{path}", data=body, timeout=60,
                             headers={**self.sender, "Content-Type": content_type, **headers})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("abuse")
    env = service_env(root / "home")
    data_dir = root / "data"
    config = write_config(root / "gateway.yaml", data_dir, workers=1, public_url=PUBLIC_URL)
    sender = create_token(config, env, "sender")
    officer = create_token(config, env, "privacy-officer")
    process = GatewayProcess(config, env, root / "server.log")
    process.start()
    try:
        yield Served(process, sender, officer, data_dir)
    finally:
        process.kill()


def alive(served: Served) -> None:
    assert requests.get(f"{served.url}/healthz", timeout=5).status_code == 200


def deep_array(depth: int, outer: bytes = b'{"resourceType":"Patient","id":"p","extension":') -> bytes:
    return outer + b"[" * depth + b"]" * depth + b"}"


def deep_object(depth: int) -> bytes:
    return b'{"resourceType":"Patient","id":"p","x":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


def deep_bundle(depth: int) -> bytes:
    return deep_array(depth, b'{"resourceType":"Bundle","type":"transaction","entry":')


FHIR = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
DOORS = [
    ("POST", "/fhir", FHIR, deep_bundle),
    ("POST", "/fhir/Patient", FHIR, deep_array),
    ("POST", "/fhir/Patient", FHIR, deep_object),
    ("PUT", "/fhir/Patient/p", FHIR, deep_object),
    ("POST", "/d/default/fhir/Patient", FHIR, deep_object),
    ("POST", "/fhir", NDJSON, lambda d: deep_array(d) + b"\n" + deep_object(d)),
    ("POST", "/deidentify/fhir", FHIR, deep_array),
    ("POST", "/deidentify/fhir", FHIR, deep_object),
]


@pytest.mark.parametrize("depth", [900, 5000, 100_000])
@pytest.mark.parametrize(("method", "path", "content_type", "make"), DOORS)
def test_deep_json_is_a_4xx_with_a_reason(served: Served, method: str, path: str,
                                         content_type: str, make: object, depth: int) -> None:
    body = make(depth)  # type: ignore[operator]
    response = requests.request(method, f"{served.url}{path}", data=body, timeout=60,
                                headers={**served.sender, "Content-Type": content_type})
    if depth < 1000 and response.status_code == 202:  # parsed: the pipeline quarantines it
        return
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    issue = response.json()["issue"][0]
    assert issue["details"]["text"] in {"not-fhir", "fhir-invalid", "unsupported-input"}
    alive(served)


def nested_sequences(depth: int) -> bytes:
    """A valid header, then ``depth`` ContentSequences each holding one item of the next."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "NEST^DEEP"
    ds.PatientID = "NEST1"
    ds.Modality = "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    opening = (struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + b"\xff" * 4
               + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF))
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return buffer.getvalue() + opening * depth + closing * depth


@pytest.mark.parametrize("accept", ["application/dicom", "application/dicom+json"])
def test_ten_thousand_nested_sequences_preview_is_4xx(served: Served, accept: str) -> None:
    response = served.post("/deidentify/dicom", nested_sequences(10_000), "application/dicom",
                           Accept=accept)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["error"] == "unsupported-input"
    alive(served)


def test_ten_thousand_nested_sequences_stow_is_refused_per_part(served: Served) -> None:
    data = nested_sequences(10_000)
    body = b"--B\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--B--\r\n"
    response = served.post("/dicomweb/studies", body,
                           'multipart/related; type="application/dicom"; boundary=B')
    assert response.status_code == 409, response.text[:300]
    (failed,) = response.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    alive(served)


@pytest.mark.parametrize("limit", ["abc", "-1", "0", "1.5", "1e9"])
def test_invalid_query_parameters_are_400(served: Served, limit: str) -> None:
    response = requests.get(f"{served.url}/audit", params={"limit": limit}, timeout=10,
                            headers=served.officer)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"] == "usage"


def test_a_huge_limit_is_capped(served: Served) -> None:
    response = requests.get(f"{served.url}/audit", params={"limit": "99999999999999999999"},
                            timeout=10, headers=served.officer)
    assert response.status_code == 200 and len(response.json()) <= 5000


def wait_done(served: Served, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = requests.get(f"{served.url}/jobs/{job_id}", headers=served.sender, timeout=10).json()
        if status["done"]:
            return dict(status)
        time.sleep(0.1)
    raise AssertionError("job not done")


def test_boundary_string_inside_an_instance_is_data(served: Served) -> None:
    """RFC 2046: a delimiter is CRLF + "--" + boundary; the string elsewhere is data."""
    boundary = "a1b2c3boundary"
    ds = phi_instance("CT_small.dcm", PATIENT, "abuse-boundary", "CT", 1)
    ds.ImageComments = f"--{boundary} and --{boundary}-- inside a value"
    ds.StudyDescription = f"x\r\n--{boundary}x"  # even after a CRLF, unless a line ends there
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    assert f"--{boundary}".encode() in data
    body = (f"preamble\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + data + f"\r\n--{boundary}--\r\nepilogue".encode())
    response = served.post("/dicomweb/studies", body,
                           f'multipart/related; type="application/dicom"; boundary="{boundary}"')
    assert response.status_code == 200, response.text[:300]
    (ref,) = response.json()["00081199"]["Value"]
    assert ref["00081155"]["Value"] == [str(ds.SOPInstanceUID)]
    status = wait_done(served, response.headers["X-Job-Id"])
    assert status["counts"] == {"forwarded": 1}


def test_stow_to_a_study_refuses_instances_of_another_study(served: Served) -> None:
    ours = phi_instance("CT_small.dcm", PATIENT, "abuse-study-a", "CT", 1)
    other = phi_instance("CT_small.dcm", PATIENT, "abuse-study-b", "CT", 2)
    body, content_type = multipart([ours, other])
    response = served.post(f"/dicomweb/studies/{ours.StudyInstanceUID}", body, content_type)
    assert response.status_code == 202, response.text[:300]
    payload = response.json()
    assert [r["00081155"]["Value"] for r in payload["00081199"]["Value"]] == [[str(ours.SOPInstanceUID)]]
    (failed,) = payload["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA900]
    assert failed["00081155"]["Value"] == [str(other.SOPInstanceUID)]
    assert failed["00000902"]["Value"] == ["study-mismatch"]
    assert wait_done(served, response.headers["X-Job-Id"])["items"] == 1


def test_retrieve_url_comes_from_public_url_not_the_host_header(served: Served) -> None:
    body, content_type = multipart([phi_instance("CT_small.dcm", PATIENT, "abuse-host", "CT", 1)])
    response = served.post("/dicomweb/studies", body, content_type, Host="evil.example.com")
    assert response.status_code == 200, response.text[:300]
    (url,) = response.json()["00081190"]["Value"]
    assert url == f"{PUBLIC_URL}/jobs/{response.headers['X-Job-Id']}"
    assert "evil" not in response.text


def test_unclosed_multipart_is_400_and_leaves_nothing(served: Served) -> None:
    data = io.BytesIO()
    pydicom.dcmwrite(data, phi_instance("CT_small.dcm", PATIENT, "abuse-open", "CT", 1),
                     enforce_file_format=True)
    body = b"--B\r\nContent-Type: application/dicom\r\n\r\n" + data.getvalue()
    response = served.post("/dicomweb/studies", body,
                           'multipart/related; type="application/dicom"; boundary=B')
    assert response.status_code == 400 and response.json()["error"] == "bad-multipart"
    assert not [p for p in (served.data_dir / "spool" / ".incoming").rglob("*") if p.is_file()]
