"""Pipeline worker processes record that they are alive; ``/metrics`` counts the recent ones.
One row per process (host:pid), written every few seconds by a thread of that process."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading

from sqlalchemy import delete, func, select, update

from gateway.persistence.db import Database
from gateway.persistence.models import WorkerHeartbeat, utcnow

ALIVE_SECONDS = 30.0
EVERY_SECONDS = 10.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def beat(db: Database, ident: str, processed: int) -> None:
    now = utcnow()
    with db.session(durable=False) as session:
        result = session.execute(
            update(WorkerHeartbeat)
            .where(WorkerHeartbeat.id == ident)
            .values(seen_at=now, processed=processed)
        )
        if not getattr(result, "rowcount", 0):
            session.add(WorkerHeartbeat(id=ident, started_at=now, seen_at=now, processed=processed))
        # rows of processes gone for a day
        session.execute(
            delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < now - dt.timedelta(days=1))
        )


def alive(db: Database) -> int:
    since = utcnow() - dt.timedelta(seconds=ALIVE_SECONDS)
    with db.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(WorkerHeartbeat)
                .where(WorkerHeartbeat.seen_at >= since)
            )
            or 0
        )


class Heart:
    """A daemon thread beating for this process; ``count`` adds processed items."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.ident = worker_id()
        self.processed = 0
        self._stop = threading.Event()
        thread = threading.Thread(target=self._loop, name="deid-heartbeat", daemon=True)
        thread.start()

    def count(self, n: int) -> None:
        self.processed += n

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                beat(self.db, self.ident, self.processed)
            except Exception:  # noqa: BLE001,S110 - a metric; the next beat retries
                pass
            self._stop.wait(EVERY_SECONDS)
