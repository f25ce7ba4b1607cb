"""Health, readiness, Prometheus metrics and the OpenAPI description."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify
from sqlalchemy import select, text

from gateway.intake.http.auth import require
from gateway.intake.http.context import gateway
from gateway.persistence.models import Item, ItemStatus
from gateway.persistence.tokens import Role

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
    except Exception:
        response = jsonify({"status": "database unavailable"})
        response.status_code = 503
        return response
    return jsonify({"status": "ready", "destinations": sorted(gw.destinations)})


@blueprint.get("/metrics")
@require(Role.ADMIN, Role.PRIVACY_OFFICER)
def metrics() -> Response:
    gw = gateway()
    counts = gw.jobs.status_counts()
    received = sum(counts.values())
    backlog = gw.jobs.backlog()
    with gw.db.session() as session:
        latencies = sorted(
            float(v) for v in session.scalars(
                select(Item.latency_seconds).where(Item.latency_seconds.is_not(None))
                .order_by(Item.updated_at.desc()).limit(10000)
            ) if v is not None
        )
    lines = [
        "# HELP deid_gateway_items_received_total Items accepted (spooled and recorded).",
        "# TYPE deid_gateway_items_received_total counter",
        f"deid_gateway_items_received_total {received}",
        "# HELP deid_gateway_items Items by pipeline status.",
        "# TYPE deid_gateway_items gauge",
    ]
    for status in ItemStatus:
        lines.append(f'deid_gateway_items{{status="{status.value}"}} {counts.get(status.value, 0)}')
    lines += [
        "# HELP deid_gateway_items_processed_total Items that left the pipeline (forwarded, quarantined, dropped).",
        "# TYPE deid_gateway_items_processed_total counter",
        "deid_gateway_items_processed_total "
        f"{sum(counts.get(s, 0) for s in ('forwarded', 'quarantined', 'dropped', 'discarded'))}",
        "# HELP deid_gateway_backlog Items waiting or in progress (received, retry, processing).",
        "# TYPE deid_gateway_backlog gauge",
        f"deid_gateway_backlog {backlog}",
        "# HELP deid_gateway_latency_seconds Receive-to-forward latency of recent items.",
        "# TYPE deid_gateway_latency_seconds summary",
    ]
    for q in (0.5, 0.9, 0.99):
        value = latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0
        lines.append(f'deid_gateway_latency_seconds{{quantile="{q}"}} {value:.6f}')
    lines.append(f"deid_gateway_latency_seconds_count {len(latencies)}")
    lines.append(f"deid_gateway_latency_seconds_sum {sum(latencies):.6f}")
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return Response(OPENAPI.read_text(encoding="utf-8"), mimetype="application/json")
