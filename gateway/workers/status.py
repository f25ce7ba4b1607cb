"""What ``/metrics`` says about the engine: the broker's queue depth and the live workers."""

from __future__ import annotations

from typing import Any

from gateway.workers.heartbeat import alive


def engine_text(gateway: Any) -> str:
    """Prometheus lines. In-process: the worker threads of this process; with a broker: the
    worker processes that beat in the last 30 s (any host) and the messages in the queue."""
    lines = [
        (
            "# HELP deid_gateway_workers Pipeline workers alive (processes with a broker; "
            "threads of this process without one)."
        ),
        "# TYPE deid_gateway_workers gauge",
    ]
    if gateway.distributed:
        from gateway.workers.celery_app import queue_depth

        lines.append(f"deid_gateway_workers {alive(gateway.db)}")
        depth = queue_depth(gateway.celery, gateway.config.queue)
        lines += [
            (
                "# HELP deid_gateway_queue_messages Messages waiting in the broker's queue "
                "(-1: the broker cannot be reached)."
            ),
            "# TYPE deid_gateway_queue_messages gauge",
            f"deid_gateway_queue_messages {-1 if depth is None else depth}",
        ]
    else:
        threads = getattr(gateway.workers, "threads", 0) if gateway.workers is not None else 0
        lines.append(f"deid_gateway_workers {threads}")
    return "\n".join(lines) + "\n"
