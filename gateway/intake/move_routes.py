"""Where the service's C-STORE listener sends what a C-MOVE of an export brings.

A cohort export run by the service (``POST /exports``) with ``dimse.enabled`` has the PACS
move each series to the service's own listener (move destination = ``dimse.ae_title``), which
takes the instances through the door pushed data uses (:meth:`JobService.accept`). The
listener may live in another process than the export (``serve`` runs it in the master), so
the export announces each C-MOVE in the database (:class:`ExportMove`) and the listener looks
an instance's series up there: found, the instance goes to the export's destination, on the
export's channel, and its job is noted for the export's report. Rows hold the series' fetch
hash (keyed with the run's salt) and the export id, never a UID.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from sqlalchemy import delete, select

from gateway.persistence.db import Database
from gateway.persistence.models import ExportMove, ExportMoveJob, ExportRun

CHANNEL = "pull-c-move"


@dataclass(frozen=True)
class MoveRoute:
    """An expected instance's way in: the export's destination, channel and starter."""

    move_id: int
    destination: str
    sender: str | None


class MoveRoutes:
    """The C-MOVEs in flight, shared through the database by the export and the listener."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the export's side --------------------------------------------------------------------
    def open(self, export_id: str, ref_hash: str) -> int:
        """Announced before the C-MOVE is sent: the first sub-operation finds it. A row a
        run cut short left for the same series goes (one runner per export: the lease)."""
        with self.db.session() as session:
            stale = select(ExportMove.id).where(
                ExportMove.export_id == export_id, ExportMove.ref_hash == ref_hash
            )
            session.execute(delete(ExportMoveJob).where(ExportMoveJob.move_id.in_(stale)))
            session.execute(delete(ExportMove).where(ExportMove.id.in_(stale)))
            move = ExportMove(export_id=export_id, ref_hash=ref_hash)
            session.add(move)
            session.flush()
            return move.id

    def close(self, move_id: int) -> list[str]:
        """The jobs the listener accepted for the move; the move is forgotten (a later
        instance of it is no longer the export's)."""
        with self.db.session() as session:
            jobs = list(
                session.scalars(
                    select(ExportMoveJob.job_id).where(ExportMoveJob.move_id == move_id)
                )
            )
            session.execute(delete(ExportMoveJob).where(ExportMoveJob.move_id == move_id))
            session.execute(delete(ExportMove).where(ExportMove.id == move_id))
            return jobs

    # -- the listener's side ------------------------------------------------------------------
    def find(self, series_uid: str) -> MoveRoute | None:
        """The move awaiting this series, if any: few rows (the moves in flight), each
        compared by its run's keyed hash, so no UID is ever written or logged."""
        with self.db.session(durable=False) as session:
            rows = session.execute(
                select(ExportMove.id, ExportMove.ref_hash, ExportRun.salt,
                       ExportRun.destination, ExportRun.started_by)
                .join(ExportRun, ExportRun.id == ExportMove.export_id)
                .order_by(ExportMove.id.desc())  # two exports moving one series: the newest
            ).all()  # fmt: skip
        for move_id, ref_hash, salt, destination, started_by in rows:
            mine = hmac.new(bytes.fromhex(salt), series_uid.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(mine, ref_hash):
                return MoveRoute(move_id, destination, started_by)
        return None

    def note(self, route: MoveRoute, job_id: str) -> None:
        with self.db.session() as session:
            session.add(ExportMoveJob(move_id=route.move_id, job_id=job_id))
