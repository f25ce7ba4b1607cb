"""``deid-gateway worker``: Celery worker processes that run the pipeline for items (and
distributed batch files) handed over through RabbitMQ.

Each worker process builds its own :class:`~gateway.service.Gateway` from the same
configuration (database, data folder, profiles, key): nothing comes from the intake host but
the item ids in the messages. Same key, same identity index: the same pseudonyms on every host.
"""

from __future__ import annotations

import gc
import os
import socket
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer
from vine import ppartial

from gateway.config import ServiceConfig
from gateway.workers.celery_app import BULK_TASK, PROCESS_TASK, make_celery

_STATE: dict[str, Any] = {}  # per worker process, built at its first task


def _gateway(config: ServiceConfig) -> Any:
    gateway = _STATE.get("gateway")
    if gateway is None:
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # tesseract: one core per process
        from gateway.service import build_gateway
        from gateway.workers.heartbeat import Heart

        gateway = build_gateway(config)
        _STATE["gateway"] = gateway
        _STATE["heart"] = Heart(gateway.db)
        gc.freeze()  # what set-up built lives as long as the process: out of every collection
    return gateway


def register_tasks(app: Celery, config: ServiceConfig) -> None:
    @app.task(name=PROCESS_TASK, bind=True)  # type: ignore[untyped-decorator]
    def process(task: Any, item_ids: list[str]) -> int:
        gateway = _gateway(config)
        redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
        done = int(gateway.jobs.process_batch(item_ids, takeover=redelivered))
        _STATE["heart"].count(done)
        return done

    @app.task(name=BULK_TASK, bind=True)  # type: ignore[untyped-decorator]
    def bulk(task: Any, run_id: str, file_ids: list[int]) -> int:
        from gateway.intake.distributed import run_bulk_files

        gateway = _gateway(config)
        done = run_bulk_files(gateway.db, run_id, file_ids, config.key_file, _vault(gateway))
        _STATE["heart"].count(done)
        return done


def _vault(gateway: Any) -> Any:
    """The service's vault, or (every destination off) one on the same database and broker key
    for bulk runs; None when this worker has no broker key (its bulk files then wait)."""
    if gateway.vault is not None:
        return gateway.vault
    from gateway.broker.keys import load_broker_key
    from gateway.broker.vault import Vault
    from gateway.errors import ConfigurationError

    try:
        return Vault(gateway.db, load_broker_key(gateway.config.broker_key_file, create=False))
    except ConfigurationError:
        return None


class PromptAckConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, acknowledging a message as soon as its task is done.

    Celery 5.7 hands the acknowledgement to the event loop (``hub.call_soon``). Scheduled from
    one of that loop's own callbacks, it waits until the next ``poll`` returns: at once when
    another frame arrives, else after the poll's timeout (1 to 10 s). A solo worker whose
    prefetch window was full of done but unacknowledged messages got nothing more from the
    broker, and sat idle while the queue still held work: with two workers, the settled rate
    halved part way in most runs of ``benchmarks/service_load.py --backlog-first``. The solo
    pool runs its task on the loop's thread, so writing the ``basic.ack`` there is what
    Celery's own green-thread loop does."""

    def call_soon_ack(self, p: Any, *args: Any, **kwargs: Any) -> Any:
        p = ppartial(p, *args, **kwargs)
        p()  # message.ack_log_error: it logs a failed ack itself
        return p


def run_worker(config: ServiceConfig, concurrency: int, loglevel: str = "WARNING") -> int:
    """Run ``concurrency`` worker processes until stopped (SIGTERM: a warm shutdown, the
    running tasks finish; their messages are acknowledged only then). Each consumes from the
    broker itself (see :mod:`gateway.workers.supervisor`)."""
    from gateway.workers.supervisor import supervise

    return supervise(concurrency, lambda: run_one_worker(config, loglevel))


def run_one_worker(config: ServiceConfig, loglevel: str = "WARNING") -> int:
    """One process, one task at a time (Celery's solo pool), its gateway built before it takes
    its first message."""
    assert config.queue is not None
    app = make_celery(config.queue)
    register_tasks(app, config)
    try:
        _gateway(config)
    except Exception:  # noqa: BLE001 - the first task builds it again and fails with its reason
        _STATE.pop("gateway", None)
    worker = app.Worker(
        concurrency=1,
        pool="solo",
        consumer_cls=PromptAckConsumer,
        loglevel=loglevel,
        hostname=f"deid-gateway@{socket.gethostname()}-{os.getpid()}",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
    )
    worker.start()
    return int(getattr(worker, "exitcode", 0) or 0)
