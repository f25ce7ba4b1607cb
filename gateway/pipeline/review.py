"""Quarantine review and the audit trail, as service methods: list, inspect, release
(reprocess with the current profile) and discard, each audited. Views call these and never
touch item state or spool paths themselves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.errors import DeidError, ReasonCode, UsageError
from gateway.persistence.db import Database
from gateway.persistence.models import AuditEvent, Item, ItemStatus, Job, utcnow
from gateway.pipeline.jobs import JobService
from gateway.pipeline.quarantine import RECORD_SUFFIX

MAX_AUDIT_ROWS = 5000


class NotInQuarantine(DeidError):
    http_status = 404
    default_reason = ReasonCode.USAGE


class PayloadMissing(DeidError):
    http_status = 409
    default_reason = ReasonCode.PAYLOAD_MISSING


@dataclass(frozen=True)
class Actor:
    """Who acts (a token id and its role): recorded in the audit, never a person's name."""

    token_id: str | None
    role: str | None


def item_view(item: Item, job: Job) -> dict[str, Any]:
    return {
        "item": item.id,
        "job": job.id,
        "destination": job.destination,
        "kind": job.kind.value,
        "channel": job.channel,
        "status": item.status.value,
        "reason": item.reason,
        "detail": item.detail,
        "stage": item.stage,
        "attempts": item.attempts,
        "updated_at": item.updated_at.isoformat(),
    }


class QuarantineReview:
    def __init__(self, db: Database, jobs: JobService) -> None:
        self.db = db
        self.jobs = jobs

    def listing(self) -> list[dict[str, Any]]:
        with self.db.session() as session:
            rows = session.execute(
                select(Item, Job)
                .join(Job, Item.job_id == Job.id)
                .where(Item.status == ItemStatus.QUARANTINED)
                .order_by(Item.updated_at)
            ).all()
            return [item_view(item, job) for item, job in rows]

    def _quarantined(self, session: Any, item_id: str) -> tuple[Item, Job]:
        item = session.get(Item, item_id)
        if item is None or item.status is not ItemStatus.QUARANTINED:
            raise NotInQuarantine(detail="no such quarantined item")
        job = session.get(Job, item.job_id)
        assert job is not None
        return item, job

    def located(self, item_id: str) -> tuple[dict[str, Any], Path | None]:
        """A quarantined item's view and where its payload is (for a preview; not audited:
        the caller audits what it shows)."""
        with self.db.session() as session:
            item, job = self._quarantined(session, item_id)
            return item_view(item, job), self.jobs.locate(job.id, item.spool_path)

    def inspect(self, item_id: str, actor: Actor) -> dict[str, Any]:
        """Reason and a de-identified preview only (attribute keywords, never values)."""
        with self.db.session() as session:
            item, job = self._quarantined(session, item_id)
            view = item_view(item, job)
            path = self.jobs.locate(job.id, item.spool_path)
            destination, kind = job.destination, job.kind.value
        view["preview"] = self._preview(destination, kind, path)
        self.audit(
            "quarantine:inspect",
            actor,
            job_id=view["job"],
            item_id=item_id,
            destination=destination,
        )
        return view

    def _preview(self, destination: str, kind: str, path: Path | None) -> dict[str, Any]:
        if kind != "dicom" or path is None:
            return {"available": False}
        from gateway.dicom.reader import read_dicom

        try:
            ds = read_dicom(path)
            dicom = self.jobs.destinations[destination].dicom
            state = dicom.deidentifier.prepare(ds)
            dicom.deidentifier.deidentify(ds, state)
        except Exception as exc:  # noqa: BLE001 - a preview that fails says so, by class only
            return {"available": False, "failure": type(exc).__name__}
        return {"available": True, "attributes": sorted({e.keyword or str(e.tag) for e in ds})}

    def release(self, item_id: str, actor: Actor, note: str | None = None) -> dict[str, Any]:
        """Back to the queue, to be reprocessed with the destination's current profile.

        Only the row changes: the payload stays where it is (the row names it), so there is no
        move that a failure could separate from the commit. The stale record file goes after
        the commit (a leftover is harmless and swept)."""
        with self.db.session() as session:
            item, job = self._quarantined(session, item_id)
            found = self.jobs.locate(job.id, item.spool_path)
            if found is None:
                raise PayloadMissing(detail="the quarantined payload is gone")
            item.spool_path = str(found)
            item.status = ItemStatus.RECEIVED
            item.reason = item.detail = item.stage = None
            item.attempts = 0
            item.next_attempt_at = None
            item.updated_at = item.queued_at = utcnow()
            job_id, destination = job.id, job.destination
        found.with_name(found.name + RECORD_SUFFIX).unlink(missing_ok=True)
        self.audit(
            "quarantine:release",
            actor,
            job_id=job_id,
            item_id=item_id,
            destination=destination,
            note=note,
        )
        self.jobs.hand_over([item_id])  # now, not at the housekeeper's next round
        return {"item": item_id, "status": "received"}

    def discard(self, item_id: str, actor: Actor, note: str | None = None) -> dict[str, Any]:
        """The row first (discarded), then the file: a failure between the two leaves a file
        no row wants, which the sweeper removes."""
        with self.db.session() as session:
            item, job = self._quarantined(session, item_id)
            found = self.jobs.locate(job.id, item.spool_path)
            item.spool_path = None
            item.status = ItemStatus.DISCARDED
            item.updated_at = utcnow()
            job_id, destination = job.id, job.destination
        if found is not None:
            found.unlink(missing_ok=True)
            found.with_name(found.name + RECORD_SUFFIX).unlink(missing_ok=True)
        self.audit(
            "quarantine:discard",
            actor,
            job_id=job_id,
            item_id=item_id,
            destination=destination,
            note=note,
        )
        return {"item": item_id, "status": "discarded"}

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, action: str, actor: Actor, **where: Any) -> None:
        profile_hash = None
        job_id = where.get("job_id")
        with self.db.session() as session:
            if job_id:
                job = session.get(Job, job_id)
                profile_hash = job.profile_hash if job else None
            session.add(
                AuditEvent(
                    actor=actor.token_id,
                    role=actor.role,
                    action=action,
                    profile_hash=profile_hash,
                    **where,
                )
            )

    def audit_events(self, limit: str | int | None = None) -> list[dict[str, Any]]:
        rows_wanted = _limit(limit)
        with self.db.session() as session:
            rows = session.scalars(
                select(AuditEvent).order_by(AuditEvent.id.desc()).limit(rows_wanted)
            ).all()
            return [
                {
                    "at": r.at.isoformat(),
                    "actor": r.actor,
                    "role": r.role,
                    "action": r.action,
                    "destination": r.destination,
                    "job": r.job_id,
                    "item": r.item_id,
                    "profile_hash": r.profile_hash,
                    "counts": r.counts,
                    "note": r.note,
                }
                for r in rows
            ]


def _limit(value: str | int | None, default: int = 200) -> int:
    """A row limit from a query parameter: 1..MAX_AUDIT_ROWS, anything else a usage error."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(detail="limit must be a whole number") from None
    if number < 1:
        raise UsageError(detail="limit must be at least 1")
    return min(number, MAX_AUDIT_ROWS)
