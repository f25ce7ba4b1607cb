"""Jobs, quarantine (list, inspect, release, discard — each audited), audit trail. The views
only translate HTTP to service calls (``gateway.pipeline.review``)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from gateway.errors import ReasonCode
from gateway.intake.http.auth import principal, require
from gateway.intake.http.context import gateway
from gateway.intake.http.errors import ApiError
from gateway.intake.http.roles import SEE_ALL_JOBS
from gateway.persistence.tokens import Role
from gateway.pipeline.review import Actor

blueprint = Blueprint("admin", __name__)


def _actor() -> Actor:
    who = principal()
    return Actor(who.token_id, who.role.value)


@blueprint.get("/jobs/<job_id>")
@require(Role.SENDER, Role.PRIVACY_OFFICER)
def job(job_id: str) -> Response:
    """A sender sees the jobs its own token sent; privacy officers and admins see every job.
    Another sender's job is "no such job" (its existence is not revealed)."""
    who = principal()
    sender = None if who.role in SEE_ALL_JOBS else who.token_id
    status = gateway().jobs.job_status(job_id, sent_by=sender)
    if status is None:
        raise ApiError(404, ReasonCode.UNKNOWN_JOB, "no such job")
    return jsonify(status)


@blueprint.get("/quarantine")
@require(Role.PRIVACY_OFFICER)
def quarantine_list() -> Response:
    return jsonify(gateway().review.listing())


@blueprint.get("/quarantine/<item_id>")
@require(Role.PRIVACY_OFFICER)
def quarantine_inspect(item_id: str) -> Response:
    """Reason and a de-identified preview only (attribute keywords, never original values)."""
    return jsonify(gateway().review.inspect(item_id, _actor()))


@blueprint.post("/quarantine/<item_id>/release")
@require(Role.PRIVACY_OFFICER)
def quarantine_release(item_id: str) -> Response:
    """Reprocess with the destination's current profile (after a profile fix)."""
    return jsonify(gateway().review.release(item_id, _actor()))


@blueprint.post("/quarantine/<item_id>/discard")
@require(Role.PRIVACY_OFFICER)
def quarantine_discard(item_id: str) -> Response:
    return jsonify(gateway().review.discard(item_id, _actor()))


@blueprint.get("/audit")
@require(Role.PRIVACY_OFFICER, Role.HONEST_BROKER)
def audit() -> Response:
    return jsonify(gateway().review.audit_events(request.args.get("limit")))
