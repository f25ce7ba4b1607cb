"""Celery on RabbitMQ, configured for at-least-once delivery with an exactly-once effect.

* durable queue, persistent messages, publisher confirms: a message the intake handed over
  survives a broker restart;
* ``acks_late`` + ``reject_on_worker_lost``: a message is acknowledged after its items are
  settled; a worker killed mid-task has its message delivered again (flagged ``redelivered``,
  which lets the new worker take the items over from the dead claim);
* one message per worker process at a time (``queue.prefetch``, 1): the acknowledgement is
  written as the task returns (``PromptAckConsumer``), so the next message is a broker round
  trip away (about a millisecond against some 100 ms for a message of ``queue.batch_size``
  ids), and no worker holds messages that another, idle, could run;
* no result backend: the item rows in the database are the results.

Messages carry item ids (random hex) only, never PHI. A message is a hint: the row decides
what runs, so a duplicate message is skipped and a lost one is handed over again by the
housekeeper.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.entity import Queue

from gateway.config import QueueConfig

PROCESS_TASK = "deid_gateway.process"
BROKER_DOWN_SECONDS = 5.0
BULK_TASK = "deid_gateway.bulk"


def make_celery(queue: QueueConfig) -> Celery:
    app = Celery("deid_gateway", broker=queue.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,  # the row records the failure; its lease expires
        worker_prefetch_multiplier=queue.prefetch,
        worker_cancel_long_running_tasks_on_connection_loss=True,  # it could not be acked
        task_default_queue=queue.queue_name,
        task_queues=[Queue(queue.queue_name, durable=True)],  # type: ignore[no-untyped-call]
        task_default_delivery_mode="persistent",
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"confirm_publish": True},
        broker_connection_timeout=queue.publish_timeout_seconds,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,  # /metrics counts the workers' heartbeat rows
    )
    return app


class BrokerDown(ConnectionError):
    """A publish failed a moment ago: this one is not tried (the rows stay unqueued)."""


class CeleryDispatch:
    """The job service's hand-over at scale: one message per ``batch_size`` ids.

    After a failed publish the broker counts as down for ``BROKER_DOWN_SECONDS``: hand-overs
    fail at once instead of each request waiting for the publish timeout; the rows are
    marked unqueued and the housekeeper publishes them when the broker is back."""

    def __init__(self, app: Celery, queue: QueueConfig) -> None:
        self.app = app
        self.queue = queue
        self._down_until = 0.0

    def __call__(self, item_ids: Sequence[str]) -> None:
        if time.monotonic() < self._down_until:
            raise BrokerDown("the broker was unreachable a moment ago")
        try:
            self._publish(list(item_ids))
        except Exception:
            self._down_until = time.monotonic() + BROKER_DOWN_SECONDS
            raise
        self._down_until = 0.0

    def _publish(self, ids: list[str]) -> None:
        size = self.queue.batch_size
        for start in range(0, len(ids), size):
            self.send(PROCESS_TASK, [ids[start : start + size]])

    def send(self, task: str, args: list[Any]) -> None:
        timeout = self.queue.publish_timeout_seconds
        self.app.send_task(
            task,
            args=args,
            queue=self.queue.queue_name,
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": timeout / 4,
                "interval_max": timeout / 2,
            },
        )


def queue_depth(app: Celery, queue: QueueConfig) -> int | None:
    """Messages waiting in the broker's queue (None when the broker cannot be asked)."""
    try:  # a pooled connection: a scrape every few seconds opens none
        with app.pool.acquire(block=True, timeout=queue.publish_timeout_seconds) as connection:
            connection.ensure_connection(max_retries=1, timeout=queue.publish_timeout_seconds)
            declared = connection.default_channel.queue_declare(
                queue=queue.queue_name, passive=True
            )
            return int(declared.message_count)
    except Exception:  # noqa: BLE001 - a metric, not a failure
        return None
