"""No PHI in logs or error messages (issue 5, "Security and operations").

The service is driven with PHI-laden DICOM (STOW-RS) and a FHIR transaction Bundle, and with
malformed inputs that carry identifiers of their own: bad JSON, a bad NDJSON line, non-UTF-8
JSON, a non-DICOM part, truncated DICOM, an undecodable DICOM value, mismatched FHIR ids and
types, identifiers in URLs, query strings and headers. Everything the service says is then
grepped for every injected identifier:

* in-process (the app factory with its worker thread): every log record at DEBUG, from every
  logger (the libraries the gateway silences on purpose, pydicom & co., stay as it sets them),
  plus Python warnings;
* as a real process (``deid-gateway serve`` under gunicorn, root logging at DEBUG): its whole
  stdout/stderr;
* in both: the body of every error response, the job status a sender reads and the quarantine
  listing and inspection a privacy officer reads.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
import requests

from gateway.persistence.tokens import Role
from tests.dicom_fixtures import Patient, phi_instance, sr_with_phi
from tests.service_helpers import gw, make_app, multipart, token
from tests.test_service_crash import KEY, GatewayProcess, create_token, service_env, write_config

PATIENT = Patient()
# identifiers that appear only inside malformed payloads, one per payload, so a leak names its source
MALFORMED = {
    "bad-json": "Thaddeus Quimbleworth",
    "bad-ndjson": "MRN-NDJ-7731904",
    "not-utf8": "Eulalie Brandtvogel",
    "non-dicom-part": "Ximena Oyarzabalde",
    "non-dicom-dicom-part": "MRN-NDP-2290417",
    "type-mismatch": "Cornelius Wrathbone",
    "id-in-url": "MRN-URL-5561823",
    "query": "Philippa Stroudwick",
    "bad-date": "Bartolomeo Vinciguerra",
    "bad-bundle-type": "Henrietta Mulqueen",
    "fhir-bad-value": "Leopoldine Harkavy",
    "preview-bad-json": "Ignatius Feltenbrook",
    "bad-token": "Rosalind Ackerbeck",
    "boundary": "Wilhelmina Crouchley",
}
PHI = [*PATIENT.phi_strings(), "NAT-99812377", "1428 Elmwood", *MALFORMED.values()]


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [phi for phi in PHI if phi.lower() in lowered]


# -- payloads ----------------------------------------------------------------------------------
def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def phi_study() -> list[pydicom.Dataset]:
    first = phi_instance("CT_small.dcm", PATIENT, "logs-study", "CT", 1)
    second = phi_instance("MR_small.dcm", PATIENT, "logs-study", "MR", 2, first)
    return [first, second, sr_with_phi(PATIENT)]


def undecodable_value() -> bytes:
    """A DICOM file whose birth date is not a date and carries a name."""
    ds = phi_instance("CT_small.dcm", PATIENT, "logs-bad", "CT", 9)
    with warnings.catch_warnings():  # pydicom warns here, in the test process, quoting the value
        warnings.simplefilter("ignore")
        ds.PatientBirthDate = MALFORMED["bad-date"]
        return dicom_bytes(ds)


def phi_bundle() -> dict[str, object]:
    patient_url = "urn:uuid:6f1c2a0e-3b7d-4c2e-9a51-0d2f4e8b7c11"
    return {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": patient_url,
             "resource": {
                 "resourceType": "Patient", "id": "logs-p1",
                 "identifier": [{"system": "http://hospital.smarthealthit.org", "value": PATIENT.patient_id}],
                 "name": [{"family": PATIENT.family.title(), "given": [PATIENT.given.title()]}],
                 "birthDate": "1947-03-12",
                 "telecom": [{"system": "phone", "value": PATIENT.phone}],
                 "address": [{"line": ["1428 Elmwood Terrace"], "city": "Springfield"}],
             },
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:0b9d8e7f-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
             "resource": {
                 "resourceType": "Observation", "status": "final",
                 "code": {"text": "Chest CT"},
                 "subject": {"reference": patient_url},
                 "note": [{"text": f"{PATIENT.given.title()} {PATIENT.family.title()} "
                                   f"(MRN {PATIENT.patient_id}) called from {PATIENT.phone}."}],
             },
             "request": {"method": "POST", "url": "Observation"}},
        ],
    }


def fhir_bad_value() -> dict[str, object]:
    """Valid JSON, accepted at intake, but values the engine cannot take (quarantine path)."""
    return {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{"resource": {
            "resourceType": "Patient", "id": "logs-p2",
            "name": [{"family": MALFORMED["fhir-bad-value"]}],
            "birthDate": MALFORMED["fhir-bad-value"],
            "extension": MALFORMED["fhir-bad-value"],
        }, "request": {"method": "POST", "url": "Patient"}}],
    }


# -- driving the service -----------------------------------------------------------------------
@dataclass
class Reply:
    what: str
    status: int
    body: str
    job: str | None = None


Send = Callable[[str, str, bytes, dict[str, str]], Reply]


@dataclass
class Session:
    send: Send
    sender: dict[str, str]
    officer: dict[str, str]
    replies: list[Reply] = field(default_factory=list)

    def __call__(self, what: str, method: str, path: str, data: bytes = b"",
                 headers: dict[str, str] | None = None, auth: dict[str, str] | None = None) -> Reply:
        reply = self.send(method, path, data, {**(self.sender if auth is None else auth), **(headers or {})})
        reply.what = what
        self.replies.append(reply)
        return reply


def provoke(call: Session) -> list[str]:
    """Send everything; returns the ids of the jobs that were accepted."""
    fhir = {"Content-Type": "application/fhir+json"}
    body, content_type = multipart(phi_study())
    call("stow-phi", "POST", "/dicomweb/studies", body, {"Content-Type": content_type})
    full = dicom_bytes(phi_study()[0])
    body, content_type = multipart([], [
        ("text/plain", f"Patient {MALFORMED['non-dicom-part']} {PATIENT.name}".encode()),
        ("application/dicom", f"{MALFORMED['non-dicom-dicom-part']} {PATIENT.patient_id} not DICOM".encode()),
        ("application/dicom", full[:600]),  # cut inside the header
        ("application/dicom", full[: len(full) - 2000]),  # cut inside the pixel data
        ("application/dicom", undecodable_value()),
    ])
    call("stow-malformed", "POST", "/dicomweb/studies", body, {"Content-Type": content_type})
    body, _ = multipart(phi_study()[:1])
    call("stow-boundary", "POST", "/dicomweb/studies", body,
         {"Content-Type": f'multipart/related; type="application/dicom"; boundary={MALFORMED["boundary"]}'})
    call("stow-json", "POST", "/dicomweb/studies", json.dumps({"name": PATIENT.name}).encode(),
         {"Content-Type": "application/json"})
    call("fhir-phi", "POST", "/fhir", json.dumps(phi_bundle()).encode(), fhir)
    call("fhir-bad-value", "POST", "/fhir", json.dumps(fhir_bad_value()).encode(), fhir)
    call("bad-json", "POST", "/fhir",
         f'{{"resourceType": "Patient", "name": [{{"text": "{MALFORMED["bad-json"]}"'.encode(), fhir)
    call("bad-ndjson", "POST", "/fhir",
         b'{"resourceType": "Patient", "id": "ok"}\n'
         + f'{{"resourceType": "Patient", "identifier": [{{"value": "{MALFORMED["bad-ndjson"]}"'.encode(),
         {"Content-Type": "application/fhir+ndjson"})
    call("not-utf8", "POST", "/fhir",
         f'{{"resourceType": "Patient", "name": [{{"text": "{MALFORMED["not-utf8"]}\xe9"}}]}}'.encode("latin-1"), fhir)
    call("not-a-bundle", "POST", "/fhir",
         json.dumps({"resourceType": "Patient", "name": [{"text": PATIENT.name}]}).encode(), fhir)
    call("bad-bundle-type", "POST", "/fhir",
         json.dumps({"resourceType": "Bundle", "type": MALFORMED["bad-bundle-type"]}).encode(), fhir)
    call("type-mismatch", "POST", "/fhir/Observation",
         json.dumps({"resourceType": "Patient", "name": [{"text": MALFORMED["type-mismatch"]}]}).encode(), fhir)
    call("id-in-url", "PUT", f"/fhir/Patient/{MALFORMED['id-in-url']}",
         json.dumps({"resourceType": "Patient", "id": PATIENT.patient_id}).encode(), fhir)
    call("fhir-text-plain", "POST", "/fhir", PATIENT.name.encode(), {"Content-Type": "text/plain"})
    call("query", "GET", f"/fhir/Patient?name={MALFORMED['query'].replace(' ', '%20')}")
    call("unknown-destination", "POST", f"/d/{PATIENT.family}/fhir", json.dumps(phi_bundle()).encode(), fhir)
    call("preview-truncated", "POST", "/deidentify/dicom", full[: len(full) // 3],
         {"Content-Type": "application/dicom"})
    call("preview-not-dicom", "POST", "/deidentify/dicom", PATIENT.name.encode() * 50,
         {"Content-Type": "application/dicom"})
    call("preview-bad-value", "POST", "/deidentify/dicom", undecodable_value(),
         {"Content-Type": "application/dicom"})
    call("preview-bad-json", "POST", "/deidentify/fhir",
         f'{{"resourceType": "Patient", "name": "{MALFORMED["preview-bad-json"]}"'.encode(), fhir)
    call("preview-bad-value-fhir", "POST", "/deidentify/fhir", json.dumps(fhir_bad_value()).encode(), fhir)
    call("bad-token", "POST", "/fhir", b"{}", fhir, auth={"Authorization": f"Bearer {MALFORMED['bad-token']}"})
    return [r.job for r in call.replies if r.job]


def read_back(call: Session, jobs: list[str], timeout: float = 90.0) -> None:
    """Wait until every job is done, then read what a sender and a privacy officer see."""
    deadline = time.monotonic() + timeout
    while True:
        states = [call.send("GET", f"/jobs/{job}", b"", call.sender) for job in jobs]
        if all(json.loads(s.body).get("done") for s in states):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not done within {timeout} s")
        time.sleep(0.2)
    for job, state in zip(jobs, states):
        state.what = f"job {job}"
        call.replies.append(state)
    listing = call("quarantine-list", "GET", "/quarantine", auth=call.officer)
    assert listing.status == 200
    for entry in json.loads(listing.body):
        call(f"quarantine {entry['item']}", "GET", f"/quarantine/{entry['item']}", auth=call.officer)


def check_replies(replies: list[Reply]) -> None:
    assert not [r for r in replies if r.status >= 500], [(r.what, r.status) for r in replies if r.status >= 500]
    errors = [r for r in replies if r.status >= 400]
    assert len(errors) >= 15, [(r.what, r.status) for r in replies]  # the malformed ones were refused
    leaked = {r.what: leaks(r.body) for r in replies}
    assert not {k: v for k, v in leaked.items() if v}, "PHI in an HTTP response"
    quarantined = [r for r in replies if r.what.startswith("quarantine ")]
    assert quarantined, "the malformed instances and resources should be in quarantine"


# -- in-process: every logger at DEBUG ---------------------------------------------------------
@pytest.fixture()
def debug_everywhere() -> Iterator[Callable[[], None]]:
    """Every logger at DEBUG and propagating, except those the gateway silences on purpose;
    levels are restored afterwards (they are process-wide)."""
    saved: dict[str, tuple[int, bool]] = {}

    def apply() -> None:
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if not isinstance(logger, logging.Logger) or name in saved:
                continue
            saved[name] = (logger.level, logger.propagate)
            if logger.level >= logging.CRITICAL and not logger.propagate:
                continue  # gateway.quiet.silence_libraries: pydicom, deid, presidio, pynetdicom
            logger.setLevel(logging.DEBUG)

    try:
        yield apply
    finally:
        for name, (level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = propagate


def test_no_phi_in_logs_or_errors_in_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    debug_everywhere: Callable[[], None],
) -> None:
    monkeypatch.setenv("DEID_GATEWAY_KEY", KEY)
    monkeypatch.setenv("DEID_GATEWAY_KEY_DIR", str(tmp_path / "keys"))
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = make_app(tmp_path / "data", start_workers=True, poll_seconds=0.05)
        debug_everywhere()  # loggers created by the factory's imports included
        caplog.set_level(logging.DEBUG)
        try:
            client = app.test_client()

            def send(method: str, path: str, data: bytes, headers: dict[str, str]) -> Reply:
                response = client.open(path, method=method, data=data, headers=headers)
                return Reply("", response.status_code, response.get_data().decode("latin-1"),
                             response.headers.get("X-Job-Id"))

            call = Session(send, token(app, Role.SENDER), token(app, Role.PRIVACY_OFFICER))
            read_back(call, provoke(call))
        finally:
            workers = gw(app).workers
            if workers is not None:
                workers.stop()
    check_replies(call.replies)
    records = caplog.records
    text = "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in records)
    text += "\n" + "\n".join(str(w.message) for w in caught)
    assert records, "nothing was logged at DEBUG: the capture is not working"
    assert leaks(text) == [], "PHI in the logs"


# -- a real process: gunicorn, root logging at DEBUG, stdout/stderr ----------------------------
SERVE_AT_DEBUG = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
    "import sqlalchemy; logging.getLogger('sqlalchemy').setLevel(logging.DEBUG); "
    "logging.getLogger('werkzeug').setLevel(logging.DEBUG); "
    "from gateway.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def test_no_phi_in_logs_or_errors_of_the_served_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = service_env(tmp_path / "home")
    config = write_config(tmp_path / "gateway.yaml", data_dir, workers=1,
                          destinations={"default": {"profile": "research"}})
    sender = {"Authorization": f"Bearer {create_token(config, env)}"}
    officer = {"Authorization": f"Bearer {create_token(config, env, 'privacy-officer')}"}
    log = tmp_path / "serve.log"
    server = GatewayProcess(config, env, log, command=[sys.executable, "-c", SERVE_AT_DEBUG])
    try:
        server.start()

        def send(method: str, path: str, data: bytes, headers: dict[str, str]) -> Reply:
            response = requests.request(method, server.url + path, data=data, headers=headers, timeout=60)
            return Reply("", response.status_code, response.content.decode("latin-1"),
                         response.headers.get("X-Job-Id"))

        call = Session(send, sender, officer)
        read_back(call, provoke(call))
    finally:
        server.kill()
    check_replies(call.replies)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "DEBUG" in text, "root logging at DEBUG did not reach the log"
    assert leaks(text) == [], "PHI in the service's stdout/stderr"
