"""Faults that must not lose data or change outcomes (issue 13): a failure between a row update
and a file move at each step, full disks (a real tmpfs), stores that are missing their endpoint.

Failures are injected where they happen in production: the move (``os.replace``), the session
commit (SQLAlchemy raising "database or disk is full"), the file system itself (a 2 MB tmpfs
filled up). After each, the item's row and its file agree again, and release still works.
"""

from __future__ import annotations

import errno
import io
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from flask import Flask
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.errors import IntakeUnavailable, StoreRejected
from gateway.persistence.models import Item, ItemStatus, Kind
from gateway.persistence.tokens import Role
from gateway.pipeline import quarantine as quarantine_module
from tests.dicom_fixtures import Patient, phi_instance
from tests.service_helpers import gw, make_app, multipart, token

PATIENT = Patient()


# -- helpers -------------------------------------------------------------------------------------
def instance(number: int = 1) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(
        buffer,
        phi_instance("CT_small.dcm", PATIENT, "fault-study", "CT", number),
        enforce_file_format=True,
    )
    return buffer.getvalue()


def row(app: Flask, item_id: str) -> Item:
    with gw(app).db.session() as session:
        item = session.get(Item, item_id)
        assert item is not None
        return item


def stored(app: Flask) -> list[Path]:
    return sorted((gw(app).config.data_dir / "store" / "default").rglob("*.dcm"))


def payload_files(app: Flask) -> list[Path]:
    data = gw(app).config.data_dir
    return sorted(p for root in ("spool", "quarantine") for p in (data / root).rglob("*.dcm"))


class Rejecting:
    """The research store refuses the first ``times`` instances for good (a quarantine that a
    privacy officer later releases), then stores them."""

    def __init__(self, app: Flask, times: int = 1) -> None:
        self.store = gw(app).destinations["default"].dicom_store
        self.inner = self.store.put_dicom
        self.left = times

    def __call__(self, ds: Any) -> str:
        if self.left > 0:
            self.left -= 1
            raise StoreRejected("injected rejection")
        return str(self.inner(ds))


class FailingCommits:
    """The next commits that match fail as SQLite does on a full disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = 0
        original = Session.commit

        def commit(session: Session) -> None:
            if self.armed > 0:
                self.armed -= 1
                raise OperationalError("COMMIT", {}, Exception("database or disk is full"))
            original(session)

        monkeypatch.setattr(Session, "commit", commit)


@pytest.fixture()
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path / "data", retry={"lease_seconds": 0.5, "first_delay_seconds": 0.05})


def quarantined_item(app: Flask, monkeypatch: pytest.MonkeyPatch) -> str:
    """One instance received; the store will reject it once."""
    monkeypatch.setattr(gw(app).destinations["default"].dicom_store, "put_dicom", Rejecting(app))
    receipt = gw(app).jobs.accept("default", Kind.DICOM, "test", [instance()])
    return receipt.item_ids[0]


def release_and_forward(app: Flask, item_id: str) -> None:
    officer = token(app, Role.PRIVACY_OFFICER)
    response = app.test_client().post(f"/quarantine/{item_id}/release", headers=officer)
    assert response.status_code == 200, response.data
    gw(app).jobs.drain(30)
    assert row(app, item_id).status is ItemStatus.FORWARDED
    assert len(stored(app)) == 1
    assert payload_files(app) == []


# -- a failure between a row update and a file move, at each step ---------------------------------
def test_quarantine_move_fails_after_the_row_update_release_still_works(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item_id = quarantined_item(app, monkeypatch)

    def failing_move(source: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, "injected")

    monkeypatch.setattr(quarantine_module, "_move", failing_move)
    with pytest.raises(OSError):
        gw(app).jobs.run_once()
    item = row(app, item_id)
    assert item.status is ItemStatus.QUARANTINED  # the row is the truth
    assert Path(str(item.spool_path)).parent == gw(app).jobs.quarantine.root
    (left,) = payload_files(app)
    assert left.is_relative_to(gw(app).jobs.spool)  # the file did not move
    monkeypatch.undo()
    monkeypatch.setattr(gw(app).destinations["default"].dicom_store, "put_dicom", Rejecting(app, 0))
    release_and_forward(app, item_id)  # release finds the file where the move left it


def test_sweeper_completes_a_quarantine_move_that_failed(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item_id = quarantined_item(app, monkeypatch)
    real_move = quarantine_module._move
    monkeypatch.setattr(
        quarantine_module,
        "_move",
        lambda s, t: (_ for _ in ()).throw(OSError(errno.EIO, "injected")),
    )
    with pytest.raises(OSError):
        gw(app).jobs.run_once()
    monkeypatch.setattr(quarantine_module, "_move", real_move)
    assert gw(app).jobs.sweep_orphans() == 0  # within the grace period: a move may be in flight
    assert gw(app).jobs.sweep_orphans(grace_seconds=0) == 1
    home = Path(str(row(app, item_id).spool_path))
    assert payload_files(app) == [home]
    record = quarantine_module.read_record(home)
    assert record["reason"] == "store-rejected" and record["sha256"]
    inspected = (
        app.test_client()
        .get(f"/quarantine/{item_id}", headers=token(app, Role.PRIVACY_OFFICER))
        .get_json()
    )
    assert inspected["preview"]["available"] is True
    release_and_forward(app, item_id)


def test_quarantine_row_update_fails_nothing_moves_and_the_item_is_taken_again(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's loss: the move succeeded, the row update failed, the lease ran out and the
    item became "spooled payload missing". Now the row goes first: its failure moves nothing."""
    item_id = quarantined_item(app, monkeypatch)
    commits = FailingCommits(monkeypatch)
    jobs = gw(app).jobs
    commit = jobs._commit

    def commit_failing(token: str, plans: list[Any], now: Any = None) -> list[Any]:
        if any(plan.status is ItemStatus.QUARANTINED for plan in plans):
            commits.armed = 1  # the commit of the quarantine's row update fails
        return commit(token, plans, now)

    monkeypatch.setattr(jobs, "_commit", commit_failing)
    with pytest.raises(OperationalError):
        jobs.run_once()
    monkeypatch.setattr(jobs, "_commit", commit)
    assert row(app, item_id).status is ItemStatus.PROCESSING
    (left,) = payload_files(app)
    assert left == Path(str(row(app, item_id).spool_path))  # still in the spool, named by its row
    time.sleep(0.6)  # the lease runs out
    assert jobs.recover() == 1
    jobs.drain(30)  # the store accepts it now (it rejected once)
    assert row(app, item_id).status is ItemStatus.FORWARDED
    assert payload_files(app) == [] and len(stored(app)) == 1


def test_a_payload_left_in_the_quarantine_by_an_old_failure_is_found(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row that still names the spool while the file sits in the quarantine (the state the
    old order left behind) is processed, not "payload missing"."""
    jobs = gw(app).jobs
    item_id = jobs.accept("default", Kind.DICOM, "test", [instance()]).item_ids[0]
    spooled = Path(str(row(app, item_id).spool_path))
    os.replace(spooled, jobs.quarantine.root / spooled.name)
    jobs.drain(30)
    assert row(app, item_id).status is ItemStatus.FORWARDED
    assert payload_files(app) == []


def test_release_commit_fails_then_release_again_works(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item_id = quarantined_item(app, monkeypatch)
    gw(app).jobs.drain(30)
    assert row(app, item_id).status is ItemStatus.QUARANTINED
    before = payload_files(app)
    commits = FailingCommits(monkeypatch)
    jobs = gw(app).jobs
    locate = jobs.locate

    def locate_then_fail_the_commit(job_id: str, recorded: str | None) -> Path | None:
        commits.armed = 1  # called inside release's session: its commit is the next one
        return locate(job_id, recorded)

    monkeypatch.setattr(jobs, "locate", locate_then_fail_the_commit)
    officer = token(app, Role.PRIVACY_OFFICER)
    assert (
        app.test_client().post(f"/quarantine/{item_id}/release", headers=officer).status_code == 500
    )
    assert row(app, item_id).status is ItemStatus.QUARANTINED
    assert payload_files(app) == before  # nothing moved
    monkeypatch.setattr(jobs, "locate", locate)
    release_and_forward(app, item_id)


def test_discard_unlink_fails_the_sweeper_removes_the_file(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item_id = quarantined_item(app, monkeypatch)
    gw(app).jobs.drain(30)
    real_unlink = Path.unlink

    def failing_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.parent == gw(app).jobs.quarantine.root:
            raise PermissionError(errno.EACCES, "injected")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", failing_unlink)
    officer = token(app, Role.PRIVACY_OFFICER)
    assert (
        app.test_client().post(f"/quarantine/{item_id}/discard", headers=officer).status_code == 500
    )
    assert row(app, item_id).status is ItemStatus.DISCARDED  # the row first
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert len(payload_files(app)) == 1
    assert gw(app).jobs.sweep_orphans(grace_seconds=0) == 1
    assert payload_files(app) == []
    assert not list(gw(app).jobs.quarantine.root.iterdir())  # the record file went too


# -- full disks, for real: a small tmpfs -----------------------------------------------------------
def _mount_tmpfs(where: Path, size: str) -> list[str] | None:
    """The command prefix that mounted it (none, or sudo), or None when mounting failed."""
    where.mkdir(parents=True, exist_ok=True)
    for prefix in ([], ["sudo", "-n"]):
        try:
            done = subprocess.run(
                [
                    *prefix,
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={size},mode=0700",
                    "tmpfs",
                    str(where),
                ],
                check=False,
                capture_output=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    return None


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs; skipped (with the reason) where mounting is not permitted, but never in CI."""
    where = tmp_path / "small-disk"
    prefix = _mount_tmpfs(where, "2m")
    if prefix is None:
        message = "mounting a tmpfs is not permitted here (needs root or passwordless sudo)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(
            [*prefix, "umount", "-l", str(where)], check=False, capture_output=True, timeout=20
        )


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` up to ``leave`` bytes free."""
    filler = disk / "filler"
    with open(filler, "ab") as fh:
        block = b"\0" * 65536
        while True:
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            if free <= leave:
                break
            try:
                fh.write(block[: max(1, min(len(block), free - leave))])
                fh.flush()
            except OSError:
                break
    return filler


# these tests fill a 2 MB volume to see the write itself fail: no free-space back-pressure
# (tests/test_back_pressure.py has that)
NO_SPACE_LIMIT = {"min_free_spool_bytes": 0}


def test_stow_on_a_full_data_volume_is_503_with_retry_after_and_nothing_half_written(
    small_disk: Path,
    tmp_path: Path,
) -> None:
    app = make_app(
        small_disk / "data", database_url=f"sqlite:///{tmp_path / 'gateway.db'}", workers=0,
        limits=NO_SPACE_LIMIT,
    )
    fill(small_disk)
    body, content_type = multipart([pydicom.dcmread(io.BytesIO(instance(n))) for n in (1, 2)])
    response = app.test_client().post(
        "/dicomweb/studies",
        data=body,
        headers={**token(app, Role.SENDER), "Content-Type": content_type},
    )
    assert response.status_code == 503, response.data
    assert response.headers["Retry-After"].isdigit()
    assert response.get_json()["error"] == "spool-write-failed"
    assert payload_files(app) == []  # nothing half-written
    assert not [p for p in (small_disk / "data" / "spool").rglob("*") if p.is_file()]
    assert gw(app).jobs.status_counts() == {}  # and nothing recorded


def test_fhir_on_a_full_volume_with_the_database_on_it_is_503(small_disk: Path) -> None:
    app = make_app(small_disk / "data", workers=0, limits=NO_SPACE_LIMIT)
    sender = token(app, Role.SENDER)
    fill(small_disk)
    patient = (
        b'{"resourceType": "Patient", "id": "p1", "name": [{"family": "' + b"X" * 300000 + b'"}]}'
    )
    response = app.test_client().post(
        "/fhir/Patient", data=patient, headers={**sender, "Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 503, response.data
    assert response.headers.get("Retry-After")
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert not list((small_disk / "data" / "spool").rglob("*.json"))


def test_accept_failure_types(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC from the spool and a full database both refuse with 503, leaving nothing."""
    jobs = gw(app).jobs
    commits = FailingCommits(monkeypatch)
    jobs.admit()  # the back-pressure count is fresh: the next commit is the accept's
    commits.armed = 1
    with pytest.raises(IntakeUnavailable) as info:
        jobs.accept("default", Kind.DICOM, "test", [instance(1), instance(2)])
    assert info.value.http_status == 503 and info.value.reason.value == "accept-failed"
    assert payload_files(app) == [] and not any(jobs.spool.iterdir())


def test_a_full_research_store_retries_never_quarantines_and_shows_in_metrics_and_readyz(
    small_disk: Path,
    tmp_path: Path,
) -> None:
    store = small_disk / "store"
    app = make_app(
        tmp_path / "data",
        retry={"lease_seconds": 5, "first_delay_seconds": 0.05, "max_delay_seconds": 0.2},
        destinations={
            "default": {"profile": "basic", "store": {"type": "folder", "path": str(store)}}
        },
    )
    filler = fill(small_disk)
    client = app.test_client()
    jobs = gw(app).jobs
    receipt = jobs.accept("default", Kind.DICOM, "test", [instance(1), instance(2)])
    for _ in range(3):
        jobs.run_once()
        jobs.run_once()
    counts = jobs.status_counts()
    assert counts == {"retry": 2}, counts  # never quarantined
    (reason,) = {row(app, i).reason for i in receipt.item_ids}
    assert reason == "store-unavailable"
    admin = token(app, Role.ADMIN)
    text = client.get("/metrics", headers=admin).get_data(as_text=True)
    assert 'deid_gateway_retry_items{destination="default",reason="store-unavailable"} 2' in text
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["retrying"] == {"default": 2}
    filler.unlink()  # space again
    jobs.drain(30)
    assert jobs.status_counts() == {"forwarded": 2}
    assert len(list(store.rglob("*.dcm"))) == 2
    assert client.get("/readyz").status_code == 200
    text = client.get("/metrics", headers=admin).get_data(as_text=True)
    assert 'deid_gateway_retry_items{destination="default",reason="store-unavailable"} 0' in text


def test_c_store_on_a_full_data_volume_is_out_of_resources_with_nothing_kept(
    small_disk: Path, tmp_path: Path,
) -> None:
    import socket

    from pynetdicom import AE

    from gateway.intake.dimse import StoreStatus, start_scp, stop_scp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    app = make_app(small_disk / "data", database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
                   workers=0, limits=NO_SPACE_LIMIT, dimse={"enabled": True, "host": "127.0.0.1", "port": port,
                                     "ae_title": "DEIDGW"})
    handle = start_scp(app)
    try:
        fill(small_disk)
        ds = pydicom.dcmread(io.BytesIO(instance(1)))
        scu = AE(ae_title="MODALITY1")
        scu.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = scu.associate("127.0.0.1", port, ae_title="DEIDGW")
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == StoreStatus.OUT_OF_RESOURCES.value
    finally:
        stop_scp(handle, grace_seconds=1.0)
    assert payload_files(app) == []
    assert gw(app).jobs.status_counts() == {}
