"""Jobs, quarantine (list, inspect, release, discard — each audited), audit trail."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from gateway.intake.http.auth import principal, require
from gateway.intake.http.context import gateway
from gateway.intake.http.errors import ApiError
from gateway.persistence.models import AuditEvent, Item, ItemStatus, Job, utcnow
from gateway.persistence.tokens import Role

blueprint = Blueprint("admin", __name__)


@blueprint.get("/jobs/<job_id>")
@require(Role.SENDER, Role.PRIVACY_OFFICER)
def job(job_id: str) -> Response:
    status = gateway().jobs.job_status(job_id)
    if status is None:
        raise ApiError(404, "unknown-job", "no such job")
    return jsonify(status)


def _item_view(item: Item, job: Job) -> dict[str, Any]:
    return {
        "item": item.id, "job": job.id, "destination": job.destination, "kind": job.kind.value,
        "channel": job.channel, "status": item.status.value, "reason": item.reason,
        "detail": item.detail, "stage": item.stage, "attempts": item.attempts,
        "updated_at": item.updated_at.isoformat(),
    }


@blueprint.get("/quarantine")
@require(Role.PRIVACY_OFFICER)
def quarantine_list() -> Response:
    with gateway().db.session() as session:
        rows = session.execute(
            select(Item, Job).join(Job, Item.job_id == Job.id)
            .where(Item.status == ItemStatus.QUARANTINED).order_by(Item.updated_at)
        ).all()
        return jsonify([_item_view(item, job) for item, job in rows])


def _quarantined(session: Any, item_id: str) -> tuple[Item, Job]:
    item = session.get(Item, item_id)
    if item is None or item.status is not ItemStatus.QUARANTINED:
        raise ApiError(404, "not-in-quarantine", "no such quarantined item")
    return item, session.get(Job, item.job_id)


@blueprint.get("/quarantine/<item_id>")
@require(Role.PRIVACY_OFFICER)
def quarantine_inspect(item_id: str) -> Response:
    """Reason and a de-identified preview only (attribute keywords, never original values)."""
    gw = gateway()
    with gw.db.session() as session:
        item, job = _quarantined(session, item_id)
        view = _item_view(item, job)
        path = Path(item.spool_path or "")
    view["preview"] = _preview(gw, job.destination, job.kind.value, path)
    _audit("quarantine:inspect", job, item)
    return jsonify(view)


def _preview(gw: Any, destination: str, kind: str, path: Path) -> dict[str, Any]:
    if kind != "dicom" or not path.exists():
        return {"available": False}
    from gateway.dicom.reader import read_dicom

    try:
        ds = read_dicom(path)
        dest = gw.destinations[destination]
        state = dest.dicom.deidentifier.prepare(ds)
        dest.dicom.deidentifier.deidentify(ds, state)
    except Exception as exc:
        return {"available": False, "failure": type(exc).__name__}
    return {"available": True, "attributes": sorted({e.keyword or str(e.tag) for e in ds})}


@blueprint.post("/quarantine/<item_id>/release")
@require(Role.PRIVACY_OFFICER)
def quarantine_release(item_id: str) -> Response:
    """Reprocess with the destination's current profile (after a profile fix)."""
    gw = gateway()
    with gw.db.session() as session:
        item, job = _quarantined(session, item_id)
        if not item.spool_path or not Path(item.spool_path).exists():
            raise ApiError(409, "payload-missing", "the quarantined payload is gone")
        target = gw.jobs.spool / job.id / Path(item.spool_path).name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(item.spool_path, target)
        item.spool_path = str(target)
        item.status = ItemStatus.RECEIVED
        item.reason = item.detail = item.stage = None
        item.updated_at = utcnow()
    _audit("quarantine:release", job, item)
    return jsonify({"item": item_id, "status": "received"})


@blueprint.post("/quarantine/<item_id>/discard")
@require(Role.PRIVACY_OFFICER)
def quarantine_discard(item_id: str) -> Response:
    gw = gateway()
    with gw.db.session() as session:
        item, job = _quarantined(session, item_id)
        if item.spool_path:
            Path(item.spool_path).unlink(missing_ok=True)
        item.spool_path = None
        item.status = ItemStatus.DISCARDED
        item.updated_at = utcnow()
    _audit("quarantine:discard", job, item)
    return jsonify({"item": item_id, "status": "discarded"})


@blueprint.get("/audit")
@require(Role.PRIVACY_OFFICER, Role.HONEST_BROKER)
def audit() -> Response:
    limit = min(int(request.args.get("limit", 200)), 5000)
    with gateway().db.session() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)).all()
        return jsonify([
            {"at": r.at.isoformat(), "actor": r.actor, "role": r.role, "action": r.action,
             "destination": r.destination, "job": r.job_id, "item": r.item_id,
             "profile_hash": r.profile_hash, "counts": r.counts}
            for r in rows
        ])


def _audit(action: str, job: Job, item: Item) -> None:
    who = principal()
    with gateway().db.session() as session:
        session.add(AuditEvent(actor=who.token_id, role=who.role.value, action=action,
                               destination=job.destination, job_id=job.id, item_id=item.id,
                               profile_hash=job.profile_hash))
