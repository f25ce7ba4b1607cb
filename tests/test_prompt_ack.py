"""The worker acknowledges a message as soon as its task is done (``PromptAckConsumer``).

Celery 5.7 hands the ack to its event loop, where, scheduled from one of the loop's own
callbacks, it waited for the next poll to return (up to seconds): a worker whose prefetch
window filled with done but unacknowledged messages got nothing more from the broker and sat
idle beside a full queue. ``benchmarks/service_load.py --backlog-first`` at N=2 shows it as the
settled rate halving part way; benchmarks/README.md has the runs before and after."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import QueueConfig, ServiceConfig
from gateway.workers import celery_worker
from gateway.workers.celery_worker import PromptAckConsumer


def test_the_ack_is_written_before_call_soon_ack_returns() -> None:
    calls: list[tuple[Any, ...]] = []
    # no hub, no pending operations: the callback must run right here
    PromptAckConsumer.call_soon_ack(object(), lambda *args: calls.append(args), "logger", "errors")
    assert calls == [("logger", "errors")]


def test_the_worker_runs_with_the_prompt_ack_consumer(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    class FakeWorker:
        exitcode = 0

        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        def start(self) -> None:
            seen["started"] = True

    class FakeApp:
        Worker = FakeWorker

        def task(self, **_: Any) -> Any:
            return lambda fn: fn

    monkeypatch.setattr(celery_worker, "make_celery", lambda queue: FakeApp())
    monkeypatch.setattr(celery_worker, "_gateway", lambda config: None)
    config = ServiceConfig(
        data_dir=tmp_path, queue=QueueConfig(broker_url="amqp://guest:guest@127.0.0.1:5672/x")
    )
    assert celery_worker.run_one_worker(config) == 0
    assert seen["started"] and seen["pool"] == "solo"
    assert seen["consumer_cls"] is PromptAckConsumer
