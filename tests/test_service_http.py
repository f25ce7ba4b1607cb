"""The service over HTTP (Flask test client): auth, STOW-RS, FHIR REST, jobs, quarantine."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from gateway.persistence.tokens import Role
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app, multipart, token

PATIENT = Patient()


@pytest.fixture()
def app(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_app(tmp_path / "data")


def study() -> list[pydicom.Dataset]:
    first = phi_instance("CT_small.dcm", PATIENT, "svc-study", "CT", 1)
    second = phi_instance("CT_small.dcm", PATIENT, "svc-study", "CT", 2, first)
    return [first, second]


def test_health_is_open_everything_else_needs_a_token(app) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    for method, path in (("post", "/dicomweb/studies"), ("post", "/fhir"), ("get", "/jobs/x"),
                         ("get", "/quarantine"), ("get", "/metrics"), ("post", "/deidentify/fhir")):
        assert getattr(client, method)(path).status_code == 401
    sender = token(app, Role.SENDER)
    assert client.get("/quarantine", headers=sender).status_code == 403


def test_stow_accepts_persists_then_forwards_clean(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    body, content_type = multipart(study())
    response = client.post("/dicomweb/studies", data=body, headers={**token(app, Role.SENDER),
                           "Content-Type": content_type})
    assert response.status_code == 200, response.data
    payload = response.get_json()
    assert len(payload["00081199"]["Value"]) == 2
    job_id = response.headers["X-Job-Id"]
    spool = list((tmp_path / "data" / "spool").rglob("*.dcm"))
    assert len(spool) == 2  # persisted before the answer
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in spool)
    gw(app).jobs.drain(60)
    status = client.get(f"/jobs/{job_id}", headers=token(app, Role.PRIVACY_OFFICER)).get_json()
    assert status["counts"] == {"forwarded": 2} and status["done"]
    stored = list((tmp_path / "data" / "store" / "default").rglob("*.dcm"))
    assert len(stored) == 2
    assert not list((tmp_path / "data" / "spool").rglob("*.dcm"))
    manifest = json.loads((tmp_path / "data" / "store" / "default" / "manifests" / f"{job_id}.json").read_text())
    assert manifest["counts"] == {"forwarded": 2} and len(manifest["forwarded"]) == 2
    assert manifest["profile"]["hash"] == status["profile_hash"] and manifest["key_fingerprint"]
    assert all(ref.endswith(".dcm") and PATIENT.patient_id not in ref for ref in manifest["forwarded"])
    for path in stored:
        raw = path.read_bytes().upper()
        for phi in PATIENT.phi_strings():
            assert phi.upper().encode() not in raw
    assert PATIENT.family not in json.dumps(status)


def test_stow_refuses_non_dicom_parts_with_failed_sop_sequence(app) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    body, content_type = multipart(study()[:1], [("application/dicom", b"not dicom at all")])
    response = client.post("/dicomweb/studies", data=body,
                           headers={**token(app, Role.SENDER), "Content-Type": content_type})
    assert response.status_code == 202
    failed = response.get_json()["00081198"]["Value"]
    assert failed[0]["00081197"]["Value"] == [0xC000]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("application/json", b"{}", 415, "unsupported-media-type"),
        ("multipart/related; type=\"application/dicom\"", b"x", 400, "bad-multipart"),
    ],
)
def test_stow_bad_requests(app, content_type: str, body: bytes, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    response = app.test_client().post("/dicomweb/studies", data=body,
                                      headers={**token(app, Role.SENDER), "Content-Type": content_type})
    assert response.status_code == status
    assert response.get_json()["error"] == code


@pytest.mark.parametrize(
    ("path", "content_type", "body", "status"),
    [
        ("/fhir", "application/fhir+json", b"{not json", 400),
        ("/fhir", "application/fhir+json", b'{"resourceType": "Patient"}', 400),
        ("/fhir", "text/plain", b"hello", 415),
        ("/fhir/Observation", "application/fhir+json", b'{"resourceType": "Patient"}', 400),
        ("/fhir", "application/fhir+json", b'{"resourceType": "Bundle", "type": "weird"}', 400),
    ],
)
def test_fhir_bad_requests_get_operation_outcome(app, path: str, content_type: str, body: bytes, status: int) -> None:  # type: ignore[no-untyped-def]
    response = app.test_client().post(path, data=body,
                                      headers={**token(app, Role.SENDER), "Content-Type": content_type})
    assert response.status_code == status
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"]


def test_fhir_transaction_is_accepted_and_forwarded(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{
            "fullUrl": "urn:uuid:11111111-2222-4333-8444-555555555555",
            "resource": {"resourceType": "Patient", "id": "p1",
                         "identifier": [{"system": "http://hospital.smarthealthit.org", "value": PATIENT.patient_id}],
                         "name": [{"family": PATIENT.family, "given": [PATIENT.given]}],
                         "birthDate": "1947-03-12"},
            "request": {"method": "POST", "url": "Patient"},
        }],
    }
    client = app.test_client()
    response = client.post("/fhir", data=json.dumps(bundle),
                           headers={**token(app, Role.SENDER), "Content-Type": "application/fhir+json"})
    assert response.status_code == 202
    gw(app).jobs.drain(120)
    status = client.get(response.headers["Content-Location"], headers=token(app, Role.PRIVACY_OFFICER)).get_json()
    assert status["counts"] == {"forwarded": 1}
    (part,) = list((tmp_path / "data" / "store" / "default" / "fhir" / "Patient").glob("*.ndjson"))
    text = part.read_text()
    assert PATIENT.family not in text and PATIENT.patient_id not in text and "1947-03-12" not in text


def test_quarantine_list_inspect_release_discard_are_audited(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    jobs = gw(app).jobs
    from gateway.persistence.models import Kind

    receipt = jobs.accept("default", Kind.DICOM, "test", [b"\x00" * 128 + b"DICM" + b"\x00" * 10])
    jobs.drain(30)
    officer = token(app, Role.PRIVACY_OFFICER)
    listing = client.get("/quarantine", headers=officer).get_json()
    assert [q["item"] for q in listing] == list(receipt.item_ids)
    assert listing[0]["reason"]
    inspected = client.get(f"/quarantine/{receipt.item_ids[0]}", headers=officer).get_json()
    assert inspected["reason"] == listing[0]["reason"]
    assert client.post(f"/quarantine/{receipt.item_ids[0]}/release", headers=officer).status_code == 200
    jobs.drain(30)
    assert client.post(f"/quarantine/{receipt.item_ids[0]}/discard", headers=officer).status_code == 200
    assert client.get("/quarantine", headers=officer).get_json() == []
    actions = [a["action"] for a in client.get("/audit", headers=officer).get_json()]
    assert {"quarantine:inspect", "quarantine:release", "quarantine:discard", "receive:test"} <= set(actions)


def test_preview_returns_deidentified_dicom_without_forwarding(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import io

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, study()[0], enforce_file_format=True)
    response = app.test_client().post("/deidentify/dicom", data=buffer.getvalue(),
                                      headers={**token(app, Role.PRIVACY_OFFICER), "Content-Type": "application/dicom"})
    assert response.status_code == 200
    ds = pydicom.dcmread(io.BytesIO(response.data))
    assert ds.PatientIdentityRemoved == "YES" and PATIENT.family not in str(ds.PatientName)
    assert not list((tmp_path / "data" / "store").rglob("*.dcm"))


def test_preview_of_an_instance_with_large_pixel_data_as_dicom_and_as_json(app) -> None:  # type: ignore[no-untyped-def]
    """Pixel data above the reader's defer size stays in the preview's temporary file until the
    answer is built: both answers must come whole."""
    import io

    ds = study()[0]
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.SamplesPerPixel = 16, 12, 11, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    pixels = bytes(range(256)) * 2048  # 512 x 512 x 2 bytes: above the defer size
    ds.PixelData = pixels
    ds.add_new(0x00283006, "OW", bytes(300_000))  # LUTData, kept, deferred too (a big LUT)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    headers = {**token(app, Role.PRIVACY_OFFICER), "Content-Type": "application/dicom"}
    client = app.test_client()

    as_dicom = client.post("/deidentify/dicom", data=buffer.getvalue(), headers=headers)
    as_json = client.post("/deidentify/dicom", data=buffer.getvalue(),
                          headers={**headers, "Accept": "application/dicom+json"})

    assert as_dicom.status_code == 200, as_dicom.data[:200]
    out = pydicom.dcmread(io.BytesIO(as_dicom.data))
    assert out.PixelData == pixels and out.PatientIdentityRemoved == "YES"
    assert as_json.status_code == 200, as_json.data[:200]
    document = as_json.get_json()
    assert document["00120062"]["Value"] == ["YES"]  # PatientIdentityRemoved
    assert "7FE00010" not in document
    assert PATIENT.family not in as_json.get_data(as_text=True)


def test_metrics_show_counts_and_backlog(app) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    body, content_type = multipart(study())
    client.post("/dicomweb/studies", data=body, headers={**token(app, Role.SENDER), "Content-Type": content_type})
    text = client.get("/metrics", headers=token(app, Role.ADMIN)).get_data(as_text=True)
    assert "deid_gateway_backlog 2" in text
    gw(app).jobs.drain(60)
    text = client.get("/metrics", headers=token(app, Role.ADMIN)).get_data(as_text=True)
    assert "deid_gateway_backlog 0" in text and 'deid_gateway_items{status="forwarded"} 2' in text
    assert client.get("/openapi.json").get_json()["openapi"].startswith("3.")
