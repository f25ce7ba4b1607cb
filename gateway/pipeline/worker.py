"""In-process workers: threads that lease items from the database and run the pipeline.

Several processes (gunicorn workers, hosts) may run them at once: leasing in the database keeps
each item with one worker; a dead worker's lease runs out and the item is taken again.
"""

from __future__ import annotations

import logging
import threading
import time

from gateway.pipeline.jobs import JobService

log = logging.getLogger("deid_gateway.worker")


class WorkerPool:
    def __init__(self, jobs: JobService, threads: int, poll_seconds: float) -> None:
        self.jobs = jobs
        self.threads = threads
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"deid-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        last_recover = last_sweep = 0.0
        sweep_every = max(1.0, self.jobs.config.retry.lease_seconds / 2)
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_recover > 1.0:
                    self.jobs.recover()
                    last_recover = time.monotonic()
                if time.monotonic() - last_sweep > sweep_every:
                    self.jobs.sweep_orphans()
                    last_sweep = time.monotonic()
                if not self.jobs.run_once():
                    self._stop.wait(self.poll_seconds)
            except Exception as exc:  # noqa: BLE001 - keep the worker alive; the lease expires
                log.error("worker loop failed (%s)", type(exc).__name__)
                self._stop.wait(1.0)
