"""Item ids handed to the workers from one background thread of the intake process.

A request is acknowledged once its spool files and rows are durable; telling the workers is
only a hint (the rows decide what runs, the housekeeper hands over again what is due), so the
sender need not wait for the broker's confirmation. Ids accepted by other requests while a
publish is under way, or within ``linger_seconds`` of the first, go out together: under load
fewer, fuller messages (up to ``batch`` ids each), which cost the broker less and give each
worker one claim and one commit for more items.

What happens to ids that are not published:

* the publish fails (the broker is down): ``on_failed`` marks their rows unqueued and the
  housekeeper publishes them once the broker answers again;
* the process dies first: their rows still say when they were queued, and the housekeeper
  hands over any row queued longer ago than a lease and still not run.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Sequence

from gateway.pipeline.dispatch import Dispatch

log = logging.getLogger(__name__)


class BackgroundHandOver:
    """A :data:`~gateway.pipeline.dispatch.Dispatch` that returns at once and publishes through
    ``dispatch`` from its own thread (started in the process that first uses it: a forked
    server process gets its own)."""

    def __init__(
        self,
        dispatch: Dispatch,
        on_failed: Callable[[Sequence[str]], None],
        batch: int = 16,
        linger_seconds: float = 0.0,
        max_ids: int = 500,
    ) -> None:
        self.dispatch = dispatch
        self.on_failed = on_failed
        self.batch = batch
        self.linger_seconds = linger_seconds
        self.max_ids = max_ids
        self._pending: list[str] = []
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._owner_pid = -1

    def __call__(self, item_ids: Sequence[str]) -> None:
        with self._cond:
            self._start_if_needed()
            self._pending.extend(item_ids)
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every id given so far was published or reported failed (tests, and the
        process's exit). False if that took longer than ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _start_if_needed(self) -> None:
        if self._owner_pid == os.getpid():
            return
        self._owner_pid = os.getpid()
        self._pending, self._busy, self._closed = [], False, False  # a fork copies no thread
        threading.Thread(target=self._loop, name="deid-hand-over", daemon=True).start()
        atexit.register(self.close)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed and not self._pending:
                    return
                if self.linger_seconds > 0:  # a moment for more ids: one fuller message
                    self._cond.wait_for(
                        lambda: len(self._pending) >= self.batch or self._closed,
                        self.linger_seconds,
                    )
                taken = self._pending[: self.max_ids]
                del self._pending[: self.max_ids]
                self._busy = True
            try:
                self.dispatch(taken)
            except Exception as exc:  # noqa: BLE001 - the rows are safe; only the hint was lost
                log.warning("hand-over to the workers failed (%s); retried", type(exc).__name__)
                self._report(taken)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _report(self, item_ids: Sequence[str]) -> None:
        try:
            self.on_failed(item_ids)
        except Exception as exc:  # noqa: BLE001 - then the lease's age makes them due
            log.warning("failed hand-over not recorded (%s)", type(exc).__name__)
