"""In-process workers (the embedded default): threads that take item ids from this process's
:class:`~gateway.pipeline.dispatch.LocalQueue` and run them. They block while there is no work
(no polling); several processes (gunicorn workers) each run their own."""

from __future__ import annotations

import logging
import threading

from gateway.pipeline.dispatch import LocalQueue
from gateway.pipeline.jobs import JobService
from gateway.workers.housekeeping import Housekeeper

log = logging.getLogger("deid_gateway.worker")

BATCH = 16  # ids per claim: one claim and one commit for several items when behind


class WorkerPool:
    def __init__(self, jobs: JobService, queue: LocalQueue, threads: int, interval: float) -> None:
        self.jobs = jobs
        self.queue = queue
        self.threads = threads
        # after a restart the in-memory queue is empty: the first round hands over everything
        self.housekeeper = Housekeeper(jobs, interval, requeue_everything_first=True)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"deid-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.housekeeper.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.housekeeper.stop(timeout)
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            ids = self.queue.take(BATCH)
            if ids is None:
                return
            try:
                self.jobs.process_batch(ids)
            except Exception as exc:  # noqa: BLE001 - keep the worker alive; the lease expires
                log.error("worker batch failed (%s)", type(exc).__name__)
