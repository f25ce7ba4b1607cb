"""Item ids handed to the workers from one background thread of the intake process.

A request is acknowledged once its spool files and rows are durable; telling the workers is
only a hint (the rows decide what runs, the housekeeper hands over again what is due), so the
sender need not wait for the broker's confirmation. Ids accepted by other requests while a
publish is under way, or within ``linger_seconds`` of the first, go out together: under load
fewer, fuller messages (up to ``batch`` ids each), which cost the broker less and give each
worker one claim and one commit for more items. A request's ids stay in one message unless
they are more than ``batch``: the worker that settles the whole delivery writes its manifest
from what it holds, without reading the rows back.

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
        batch: int = 32,
        linger_seconds: float = 0.0,
    ) -> None:
        self.dispatch = dispatch
        self.on_failed = on_failed
        self.batch = batch
        self.linger_seconds = linger_seconds
        self._pending: list[list[str]] = []  # one list per call: a request's ids
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._owner_pid = -1

    def __call__(self, item_ids: Sequence[str]) -> None:
        with self._cond:
            self._start_if_needed()
            if item_ids:
                self._pending.append(list(item_ids))
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
                        lambda: sum(map(len, self._pending)) >= self.batch or self._closed,
                        self.linger_seconds,
                    )
                taken, self._pending = self._pending, []
                self._busy = True
            try:
                for message in pack(taken, self.batch):
                    self._publish(message)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _publish(self, message: list[str]) -> None:
        try:
            self.dispatch(message)
        except Exception as exc:  # noqa: BLE001 - the rows are safe; only the hint was lost
            log.warning("hand-over to the workers failed (%s); retried", type(exc).__name__)
            self._report(message)

    def _report(self, item_ids: Sequence[str]) -> None:
        try:
            self.on_failed(item_ids)
        except Exception as exc:  # noqa: BLE001 - then the lease's age makes them due
            log.warning("failed hand-over not recorded (%s)", type(exc).__name__)


def pack(groups: Sequence[Sequence[str]], batch: int) -> list[list[str]]:
    """Messages of up to ``batch`` ids, in arrival order, a group (a request) split only when
    it alone is more than ``batch``."""
    messages: list[list[str]] = []
    current: list[str] = []
    for group in groups:
        if len(current) + len(group) > batch and current:
            messages.append(current)
            current = []
        ids = list(group)
        while len(ids) > batch:
            messages.append(ids[:batch])
            ids = ids[batch:]
        current.extend(ids)
    if current:
        messages.append(current)
    return messages
