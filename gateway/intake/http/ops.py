"""Health, readiness, Prometheus metrics and the OpenAPI description."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from gateway.intake.http.auth import require
from gateway.intake.http.context import gateway
from gateway.persistence.tokens import Role
from gateway.pipeline.metrics import metrics_text
from gateway.workers.status import engine_text

blueprint = Blueprint("ops", __name__)
OPENAPI = Path(__file__).with_name("openapi.json")


@blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    gw = gateway()
    try:
        with gw.db.session() as session:
            session.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure of the database means not ready
        response = jsonify({"status": "database unavailable"})
        response.status_code = 503
        return response
    failing = gw.jobs.unavailable_stores()
    if failing:  # intake still spools; what it takes waits until the store is back
        response = jsonify(
            {
                "status": "store-unavailable",
                "destinations": sorted(gw.destinations),
                "retrying": failing,
            }
        )
        response.status_code = 503
        return response
    return jsonify({"status": "ready", "destinations": sorted(gw.destinations)})


@blueprint.get("/metrics")
@require(Role.ADMIN, Role.PRIVACY_OFFICER)
def metrics() -> Response:
    gw = gateway()
    text = metrics_text(gw.jobs) + engine_text(gw)
    return Response(text, mimetype="text/plain; version=0.0.4")


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return Response(OPENAPI.read_text(encoding="utf-8"), mimetype="application/json")
