"""One runner per export at a time, across processes and hosts: the run's row carries a lease
(owner ``host:pid``, renewed while the export runs). Another process asking for a leased
export is refused; a lease whose owner died on this host (SIGKILL, a crash) is taken over at
once, one of another host when it runs out. Two runners would fetch the same series twice."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from typing import Self

from sqlalchemy import or_, select, update

from gateway.errors import DeidError, ReasonCode
from gateway.persistence.db import Database
from gateway.persistence.models import ExportRun, utcnow

log = logging.getLogger("deid_gateway.export")

LEASE_SECONDS = 60.0
RENEW_SECONDS = LEASE_SECONDS / 3


class ExportBusy(DeidError):
    http_status = 409
    default_reason = ReasonCode.EXPORT_RUNNING
    default_stage = "pull"


def this_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead(owner: str | None) -> bool:
    """The owner is a process of this host that no longer exists."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def take(db: Database, export_id: str) -> None:
    """The lease for this process, or :class:`ExportBusy`. One conditional UPDATE: of two
    processes asking at once, one gets it."""
    me = this_owner()
    now = utcnow()
    with db.session() as session:
        holder = session.scalar(select(ExportRun.lease_owner).where(ExportRun.id == export_id))
        owners = [me, holder] if holder and _dead(holder) else [me]
        taken = session.execute(
            update(ExportRun)
            .where(
                ExportRun.id == export_id,
                or_(
                    ExportRun.lease_until.is_(None),
                    ExportRun.lease_until < now,
                    ExportRun.lease_owner.in_(owners),
                ),
            )
            .values(lease_owner=me, lease_until=now + dt.timedelta(seconds=LEASE_SECONDS))
        )
        if getattr(taken, "rowcount", 0) != 1:
            raise ExportBusy(detail="this export is running in another process")


def renew(db: Database, export_id: str) -> None:
    with db.session(durable=False) as session:
        session.execute(
            update(ExportRun)
            .where(ExportRun.id == export_id, ExportRun.lease_owner == this_owner())
            .values(lease_until=utcnow() + dt.timedelta(seconds=LEASE_SECONDS))
        )


def release(db: Database, export_id: str) -> None:
    with db.session() as session:
        session.execute(
            update(ExportRun)
            .where(ExportRun.id == export_id, ExportRun.lease_owner == this_owner())
            .values(lease_owner=None, lease_until=None)
        )


class Renewer:
    """Renews the lease every ``RENEW_SECONDS`` while an export runs (a series can take
    longer than a lease)."""

    def __init__(self, db: Database, export_id: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(db, export_id), name="export-lease", daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self, db: Database, export_id: str) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                renew(db, export_id)
            except Exception as exc:  # noqa: BLE001 - a database hiccup: the next one tries again
                log.warning("export lease renewal failed (%s)", type(exc).__name__)
