"""Prometheus metrics of the pipeline, as text: item counts by status, backlog, latency."""

from __future__ import annotations

from sqlalchemy import select

from gateway.errors import ReasonCode
from gateway.persistence.models import Item, ItemStatus
from gateway.pipeline.jobs import JobService


def metrics_text(jobs: JobService) -> str:
    counts = jobs.status_counts()
    received = sum(counts.values())
    backlog = jobs.backlog()
    with jobs.db.session() as session:
        latencies = sorted(
            float(v)
            for v in session.scalars(
                select(Item.latency_seconds)
                .where(Item.latency_seconds.is_not(None))
                .order_by(Item.updated_at.desc())
                .limit(10000)
            )
            if v is not None
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
        (
            "deid_gateway_items_processed_total "
            f"{sum(counts.get(s, 0) for s in ('forwarded', 'quarantined', 'dropped', 'duplicate', 'discarded'))}"
        ),
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
    lines += [
        (
            "# HELP deid_gateway_undeclared_register A DICOM issuer or FHIR MR identifier system"
            " that no identity namespace of the destination's profile declares."
        ),
        "# TYPE deid_gateway_undeclared_register gauge",
    ]
    for (destination, name), seen in sorted(jobs.undeclared_registers().items()):
        label = name.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(
            f'deid_gateway_undeclared_register{{destination="{destination}",register="{label}"}} {seen}'
        )
    lines += [
        (
            "# HELP deid_gateway_retry_items Items waiting for a retry, by destination and reason"
            " (store-unavailable: the research store is down, full or misconfigured)."
        ),
        "# TYPE deid_gateway_retry_items gauge",
    ]
    retrying = jobs.retrying()
    keys = {(d, ReasonCode.STORE_UNAVAILABLE.value) for d in jobs.destinations} | set(retrying)
    for destination, reason in sorted(keys):
        lines.append(
            f'deid_gateway_retry_items{{destination="{destination}",reason="{reason}"}} '
            f"{retrying.get((destination, reason), 0)}"
        )
    return "\n".join(lines) + "\n"
