"""The one timer of the pipeline. New work is delivered to the workers when it arrives; what
becomes runnable later (a retry whose delay ran out, a wait for a Patient that expired, the
lease of a dead worker, an id whose hand-over failed because the broker was down) is handed
over by this thread, every ``housekeeping_seconds``: a few indexed queries, nothing when idle.
It also reconciles spool and rows, and tells ``/metrics`` that this process's workers live.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gateway.pipeline.jobs import JobService

log = logging.getLogger("deid_gateway.housekeeping")


class Housekeeper:
    def __init__(
        self,
        jobs: JobService,
        interval: float,
        requeue_everything_first: bool = False,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.jobs = jobs
        self.interval = interval
        self.requeue_everything_first = requeue_everything_first
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="deid-housekeeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def tick(self, everything: bool = False) -> int:
        """One round; returns how many ids were handed over."""
        handed = len(self.jobs.requeue_due(everything=everything))
        if self.heartbeat is not None:
            self.heartbeat()
        return handed

    def _loop(self) -> None:
        everything = self.requeue_everything_first
        last_sweep = 0.0  # the first round reconciles too (after a restart)
        sweep_every = max(1.0, self.jobs.config.retry.lease_seconds / 2)
        while not self._stop.is_set():
            try:
                self.tick(everything)
                everything = False
                if time.monotonic() - last_sweep > sweep_every:
                    self.jobs.sweep_orphans()
                    last_sweep = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - keep going; the next round retries
                log.error("housekeeping failed (%s)", type(exc).__name__)
            self._stop.wait(min(self.interval, sweep_every))
