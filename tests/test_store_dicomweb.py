"""The DICOMweb research store against a real Orthanc: STOW-RS, QIDO-RS and WADO-RS round trips,
idempotency, error mapping, and the service forwarding through it, store down included."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from flask import Flask
from pydicom.dataset import Dataset

from gateway.config import StoreConfig
from gateway.errors import ConfigurationError
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.persistence.tokens import Role
from gateway.pipeline.dicom_stages import DicomProcessor
from gateway.profiles.loader import load_profile
from gateway.stores.base import StoreRejected, StoreUnavailable
from gateway.stores.dicomweb import DicomwebStore
from tests import orthanc_harness
from tests.dicom_fixtures import Patient, phi_instance
from tests.orthanc_harness import OrthancServer
from tests.service_helpers import gw, make_app, multipart, token

orthanc_server = orthanc_harness.orthanc_server  # fixtures: one Orthanc per session, empty per test
orthanc = orthanc_harness.orthanc

PATIENT = Patient()
SOURCES = (("CT_small.dcm", "CT"), ("CT_small.dcm", "CT"), ("MR_small.dcm", "MR"))


def study(key: str) -> list[Dataset]:
    out: list[Dataset] = []
    for number, (source, series) in enumerate(SOURCES, start=1):
        out.append(phi_instance(source, PATIENT, key, series, number, out[-1] if out else None))
    return out


def deidentified(key: str) -> list[Dataset]:
    profile = load_profile("basic")
    processor = DicomProcessor(profile, Linkage.from_profile(profile, KeyRing()))
    return [processor.process(ds).dataset for ds in study(key)]


def client(server: OrthancServer) -> DICOMwebClient:
    return DICOMwebClient(url=server.dicomweb_url)


def uid(result: dict[str, Any], tag: str) -> str:
    return str(result[tag]["Value"][0])


def assert_no_phi(raw: bytes) -> None:
    upper = raw.upper()
    for phi in PATIENT.phi_strings():
        assert phi.upper().encode() not in upper, "PHI found in the stored instance"


# -- the store on its own ------------------------------------------------------------------------
def test_stow_then_qido_finds_the_instance_by_its_pseudonymised_study(orthanc: OrthancServer) -> None:
    original = study("unit")[0]
    clean = deidentified("unit")[0]
    assert clean.StudyInstanceUID != original.StudyInstanceUID
    store = DicomwebStore(orthanc.dicomweb_url)
    ref = store.put_dicom(clean)
    assert ref == (f"studies/{clean.StudyInstanceUID}/series/{clean.SeriesInstanceUID}"
                   f"/instances/{clean.SOPInstanceUID}")
    found = client(orthanc).search_for_instances(search_filters={"StudyInstanceUID": clean.StudyInstanceUID})
    assert [uid(r, "00080018") for r in found] == [clean.SOPInstanceUID]
    assert client(orthanc).search_for_studies(
        search_filters={"StudyInstanceUID": original.StudyInstanceUID}) == []
    back = client(orthanc).retrieve_instance(clean.StudyInstanceUID, clean.SeriesInstanceUID,
                                             clean.SOPInstanceUID)
    assert back.PatientIdentityRemoved == "YES"


def test_storing_the_same_instance_twice_leaves_one(orthanc: OrthancServer) -> None:
    store = DicomwebStore(orthanc.dicomweb_url)
    clean = deidentified("twice")
    refs = [store.put_dicom(ds) for ds in clean]
    assert refs == [store.put_dicom(ds) for ds in deidentified("twice")]  # same pseudonyms
    assert orthanc.instance_count() == len(clean)


def test_put_fhir_is_refused() -> None:
    with pytest.raises(StoreRejected):
        DicomwebStore("http://127.0.0.1:9").put_fhir([{"resourceType": "Patient", "id": "x"}])


def test_from_config_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError):
        DicomwebStore.from_config(StoreConfig(type="dicomweb"))
    monkeypatch.delenv("DEID_TEST_STORE_TOKEN", raising=False)
    with pytest.raises(ConfigurationError):
        DicomwebStore.from_config(StoreConfig(type="dicomweb", url="http://x", token_env="DEID_TEST_STORE_TOKEN"))


class Canned:
    """A tiny DICOMweb stand-in on 127.0.0.1 answering what a test sets (status, JSON body)."""

    def __init__(self) -> None:
        self.status = 200
        self.body: dict[str, Any] | None = {}
        self.delay = 0.0
        self.headers: list[dict[str, str]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                canned.headers.append(dict(self.headers))
                time.sleep(canned.delay)
                data = b"" if canned.body is None else json.dumps(canned.body).encode()
                self.send_response(canned.status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture()
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.server.shutdown()
    server.server.server_close()


def failed(code: int) -> dict[str, Any]:
    return {"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [code]}}]}}


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, {"00081198": {"vr": "SQ"}, "00081199": {"vr": "SQ", "Value": [{}]}}, None),
        (202, {"00081199": {"vr": "SQ", "Value": [{}]}}, None),  # warnings only
        (200, None, None),  # no body: 200 means stored (PS3.18 10.5.3)
        (503, None, StoreUnavailable),
        (500, {}, StoreUnavailable),
        (429, None, StoreUnavailable),
        (401, None, StoreUnavailable),  # the gateway's token, not the instance: wait, fix, retry
        (400, None, StoreRejected),
        (404, None, StoreUnavailable),  # no STOW-RS at the base URL: misconfigured, wait
        (405, None, StoreUnavailable),
        (409, failed(0x0110), StoreRejected),
        (202, failed(0xC000), StoreRejected),
        (200, failed(0xA700), StoreUnavailable),  # out of resources: transient
    ],
)
def test_responses_map_to_typed_errors_without_values(
    canned: Canned, caplog: pytest.LogCaptureFixture, status: int, body: dict[str, Any] | None,
    error: type[Exception] | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    canned.status, canned.body = status, body
    clean = deidentified("codes")[0]
    store = DicomwebStore(canned.url)
    if error is None:
        assert store.put_dicom(clean).endswith(clean.SOPInstanceUID)
        return
    with pytest.raises(error) as info:
        store.put_dicom(clean)
    text = str(info.value) + caplog.text
    for value in (clean.StudyInstanceUID, clean.SeriesInstanceUID, clean.SOPInstanceUID, canned.url):
        assert value not in text


def test_timeout_and_refused_connection_are_transient(canned: Canned) -> None:
    canned.delay = 0.5
    with pytest.raises(StoreUnavailable):
        DicomwebStore(canned.url, timeout_seconds=0.1).put_dicom(deidentified("timeout")[0])
    url = canned.url
    canned.server.shutdown()
    canned.server.server_close()
    with pytest.raises(StoreUnavailable):
        DicomwebStore(url).put_dicom(deidentified("refused")[0])


def test_bearer_token_comes_from_the_named_variable(canned: Canned, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEID_TEST_STORE_TOKEN", "s3cret-token")
    store = DicomwebStore.from_config(StoreConfig(type="dicomweb", url=canned.url,
                                                  token_env="DEID_TEST_STORE_TOKEN", timeout_seconds=5))
    store.put_dicom(deidentified("token")[0])
    assert canned.headers[-1]["Authorization"] == "Bearer s3cret-token"
    assert canned.headers[-1]["Content-Type"].startswith('multipart/related; type="application/dicom"')


# -- through the service -------------------------------------------------------------------------
def service(tmp_path: Path, server: OrthancServer) -> Flask:
    return make_app(
        tmp_path / "data",
        destinations={"default": {"profile": "basic",
                                  "store": {"type": "dicomweb", "url": server.dicomweb_url,
                                            "timeout_seconds": 5}}},
        retry={"first_delay_seconds": 0.1, "max_delay_seconds": 0.5},
    )


def send(app: Flask, datasets: list[Dataset]) -> str:
    body, content_type = multipart(datasets)
    response = app.test_client().post("/dicomweb/studies", data=body,
                                      headers={**token(app, Role.SENDER), "Content-Type": content_type})
    assert response.status_code == 200, response.status_code
    return str(response.headers["X-Job-Id"])


def job(app: Flask, job_id: str) -> dict[str, Any]:
    response = app.test_client().get(f"/jobs/{job_id}", headers=token(app, Role.PRIVACY_OFFICER))
    return dict(response.get_json())


def backlog(app: Flask) -> int:
    text = app.test_client().get("/metrics", headers=token(app, Role.ADMIN)).get_data(as_text=True)
    match = re.search(r"^deid_gateway_backlog (\d+)$", text, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def test_service_forwards_clean_instances_to_orthanc(orthanc: OrthancServer, tmp_path: Path) -> None:
    app = service(tmp_path, orthanc)
    sent = study("e2e")
    job_id = send(app, sent)
    gw(app).jobs.drain(60)
    assert job(app, job_id)["counts"] == {"forwarded": len(sent)}
    web = client(orthanc)
    (found_study,) = web.search_for_studies()
    study_uid = uid(found_study, "0020000D")
    assert study_uid != sent[0].StudyInstanceUID  # pseudonymised
    instances = web.search_for_instances(study_instance_uid=study_uid)
    assert len(instances) == len(sent)
    for result in instances:
        ds = web.retrieve_instance(study_uid, uid(result, "0020000E"), uid(result, "00080018"))
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds)
        assert_no_phi(buffer.getvalue())  # what WADO-RS hands a research partner
    for orthanc_id in orthanc.instance_ids():
        assert_no_phi(orthanc.instance_file(orthanc_id))  # the bytes Orthanc stored
    # the same study again (a PACS resend): same pseudonyms, still one copy of each
    send(app, study("e2e"))
    gw(app).jobs.drain(60)
    assert orthanc.instance_count() == len(sent)


def test_store_down_items_wait_then_go_exactly_once(
    orthanc: OrthancServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = service(tmp_path, orthanc)
    jobs = gw(app).jobs
    spool = tmp_path / "data" / "spool"
    sent = study("down")
    orthanc.stop()
    try:
        job_id = send(app, sent)
        jobs.drain(1.0)  # several attempts, each refused
        status = job(app, job_id)
        assert status["counts"] == {"retry": len(sent)} and not status["done"]
        assert backlog(app) == len(sent)
        assert len(list(spool.rglob("*.dcm"))) == len(sent)  # nothing lost
    finally:
        orthanc.start()
    jobs.drain(30)
    status = job(app, job_id)
    assert status["counts"] == {"forwarded": len(sent)} and status["done"]
    assert orthanc.instance_count() == len(sent)
    assert backlog(app) == 0
    assert not list(spool.rglob("*.dcm"))
    for phi in PATIENT.phi_strings():
        assert phi not in caplog.text
