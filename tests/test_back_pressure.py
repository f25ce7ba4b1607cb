"""Back-pressure and the hand-over to the workers, on the real app and database.

* Past ``limits.max_backlog`` (or below ``limits.min_free_spool_bytes``) every door refuses
  new work as "try again later", keeping nothing: STOW-RS 503 + Retry-After with every
  instance failed as 0xA700 (PS3.18 10.5.3), FHIR 503 + Retry-After with an OperationOutcome,
  C-STORE 0xA700. Once the backlog drains, the same request is accepted.
* A hand-over that fails (the broker is down) leaves the rows unqueued; the housekeeper hands
  them over again. A message delivered again after its worker died takes the items over:
  the dead claim settles nothing, the redo forwards (its own earlier write is no duplicate).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest

from gateway.intake.dimse import StoreStatus, start_scp, stop_scp
from gateway.persistence.models import Item, ItemStatus, Kind
from gateway.persistence.tokens import Role
from gateway.pipeline.dispatch import LocalQueue
from gateway.pipeline.handover import BackgroundHandOver
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app, multipart, token
from tests.test_dimse import SOURCES, _native_first, _scu

PATIENT = Patient()


def _instances(count: int, key: str = "bp") -> list[pydicom.Dataset]:
    out: list[pydicom.Dataset] = []
    for n in range(count):
        out.append(phi_instance(SOURCES["explicit-le"], PATIENT, key, "ct", n + 1, out[0] if out else None))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rows(app: object) -> list[Item]:
    with gw(app).db.session() as session:  # type: ignore[arg-type]
        return list(session.query(Item))


def test_a_full_backlog_refuses_every_door_until_it_drains(tmp_path: Path) -> None:
    port = _free_port()
    app = make_app(tmp_path / "data", limits={"max_backlog": 2},
                   dimse={"enabled": True, "host": "127.0.0.1", "port": port, "ae_title": "DEIDGW"})
    sender = token(app, Role.SENDER)
    client = app.test_client()
    first = _instances(3)
    body, content_type = multipart(first[:2])
    assert client.post("/dicomweb/studies", data=body,
                       headers={**sender, "Content-Type": content_type}).status_code == 200
    gw(app).jobs._backlog_cache = (0.0, 0)  # counted again now, not a second later
    spooled_before = sorted((tmp_path / "data" / "spool").rglob("*.dcm"))

    body, content_type = multipart(first[2:])
    refused = client.post("/dicomweb/studies", data=body, headers={**sender, "Content-Type": content_type})
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    document = refused.get_json()
    reasons = {"backlog-full"} | {
        item["00000902"]["Value"][0] for item in document.get("00081198", {}).get("Value", [])
    }
    assert reasons == {"backlog-full"}, document

    fhir = client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient", "id": "x"}),
                       headers={**sender, "Content-Type": "application/fhir+json"})
    assert fhir.status_code == 503 and fhir.headers["Retry-After"]
    assert fhir.get_json()["resourceType"] == "OperationOutcome"

    handle = start_scp(gw(app))
    try:
        ds = first[2]
        assoc = _scu(_native_first(ds)).associate("127.0.0.1", port, ae_title="DEIDGW")
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        assoc.release()
    finally:
        stop_scp(handle, grace_seconds=1.0)
    assert status.Status == StoreStatus.OUT_OF_RESOURCES == 0xA700
    assert sorted((tmp_path / "data" / "spool").rglob("*.dcm")) == spooled_before  # nothing kept
    assert len(_rows(app)) == 2

    gw(app).jobs.drain(60)  # the pipeline catches up: the door opens again
    gw(app).jobs._backlog_cache = (0.0, 0)
    again = client.post("/dicomweb/studies", data=body, headers={**sender, "Content-Type": content_type})
    assert again.status_code == 200, again.data


def test_a_nearly_full_spool_volume_refuses_with_its_reason(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data", limits={"min_free_spool_bytes": 1 << 62})
    body, content_type = multipart(_instances(1))
    answer = app.test_client().post("/dicomweb/studies", data=body,
                                    headers={**token(app, Role.SENDER), "Content-Type": content_type})
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert answer.get_json()["error"] == "spool-low"
    assert _rows(app) == []


def test_a_failed_hand_over_is_handed_over_again_by_the_housekeeper(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    jobs = gw(app).jobs
    delivered: list[str] = []

    def broker_down(_ids: Sequence[str]) -> None:
        raise ConnectionError("broker down")

    jobs.dispatch = broker_down
    receipt = jobs.accept("default", Kind.DICOM, "test", [_bytes(ds) for ds in _instances(2, "ho")])
    assert all(row.queued_at is None for row in _rows(app))  # the hint was lost, the rows are safe
    jobs.dispatch = delivered.extend
    assert sorted(jobs.requeue_due()) == sorted(receipt.item_ids)
    assert sorted(delivered) == sorted(receipt.item_ids)
    assert jobs.requeue_due() == []  # handed over once, not on every round


def test_a_redelivered_message_takes_over_and_the_dead_claim_settles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(tmp_path / "data")
    jobs = gw(app).jobs
    assert isinstance(jobs.dispatch, LocalQueue)
    (item_id,) = jobs.accept("default", Kind.DICOM, "test", [_bytes(_instances(1, "to")[0])]).item_ids
    dead_token, claimed = jobs._claim([item_id])
    assert [c.id for c in claimed] == [item_id]
    commit = jobs._commit
    monkeypatch.setattr(jobs, "_commit", lambda token, plans, now=None: [])  # the worker dies here
    jobs._run_claimed(dead_token, claimed)  # it wrote the store, its row was never settled
    monkeypatch.setattr(jobs, "_commit", commit)
    stored = list((tmp_path / "data" / "store").rglob("*.dcm"))
    assert len(stored) == 1
    (row,) = _rows(app)
    assert row.status is ItemStatus.PROCESSING and row.lease_owner == dead_token
    assert jobs.process_batch([item_id]) == 0  # a live claim holds it: a duplicate message skips
    assert jobs.process_batch([item_id], takeover=True) == 1  # redelivered: taken over
    (row,) = _rows(app)
    assert row.status is ItemStatus.FORWARDED and row.claims == 2  # the redo is no duplicate
    assert list((tmp_path / "data" / "store").rglob("*.dcm")) == stored
    late = jobs._forwarded  # the dead claim's late commit (it was only slow) changes nothing
    assert jobs._commit(dead_token, [late(_settling(row, item_id))]) == []


def _settling(row: Item, item_id: str) -> object:
    from gateway.pipeline.jobs import _Settling
    from gateway.pipeline.outcome import Outcome, Status
    from gateway.pipeline.payload import Payload, PayloadKind

    payload = Payload(PayloadKind.DICOM, item_id, data=b"x")
    return _Settling(item_id, "default", row.job_id, payload, Outcome(Status.FORWARDED),
                     0, None, row.received_at)


def _bytes(ds: pydicom.Dataset) -> bytes:
    import io

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()




def test_a_broker_that_is_down_costs_one_publish_timeout_not_one_per_request(tmp_path: Path) -> None:
    import time

    silent = socket.socket()  # a broker that hangs: the connection opens, nothing answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    app = make_app(tmp_path / "data", workers=0,
                   queue={"broker_url": f"amqp://guest:guest@127.0.0.1:{port}//",
                          "publish_timeout_seconds": 0.5})
    jobs = gw(app).jobs
    first = jobs.accept("default", Kind.DICOM, "test", [_bytes(_instances(1, "bd1")[0])])
    started = time.monotonic()
    second = jobs.accept("default", Kind.DICOM, "test", [_bytes(_instances(1, "bd2")[0])])
    assert time.monotonic() - started < 0.3, "a request waited for the dead broker"
    assert isinstance(jobs.dispatch, BackgroundHandOver)  # requests never wait for the broker
    assert jobs.dispatch.flush(timeout=5.0)
    assert time.monotonic() - started < 1.5, "each hand-over waited for its own publish timeout"
    assert all(row.queued_at is None for row in _rows(app))  # accepted, safe, not handed over
    delivered: list[str] = []
    jobs.dispatch = delivered.extend  # the broker is back
    assert sorted(jobs.requeue_due()) == sorted(first.item_ids + second.item_ids)
    assert sorted(delivered) == sorted(first.item_ids + second.item_ids)
    silent.close()
