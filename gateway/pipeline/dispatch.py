"""How accepted item ids reach the workers: a callable the job service is given.

The in-process default is a queue in memory (:class:`LocalQueue`); at scale it is a Celery
publish to RabbitMQ (``gateway.workers.celery_app``). Either way the id is only a hint: the
item's row decides what is runnable, so an id delivered twice or lost changes nothing (the
housekeeper hands over again what is due).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence

Dispatch = Callable[[Sequence[str]], None]


def no_dispatch(item_ids: Sequence[str]) -> None:
    """Nobody is told (tests that drain by hand; an intake whose workers run elsewhere and
    find work through the housekeeper)."""


class LocalQueue:
    """Ids waiting for this process's worker threads. ``take`` blocks until there is work
    (no polling) and returns up to ``batch`` ids at once, so one claim and one commit serve
    several items when the pipeline is behind."""

    def __init__(self) -> None:
        self._ids: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def __call__(self, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            self._ids.put(item_id)

    def take(self, batch: int, timeout: float | None = None) -> list[str] | None:
        """Up to ``batch`` ids; [] on timeout; None once :meth:`close` was called."""
        try:
            first = self._ids.get(timeout=timeout)
        except queue.Empty:
            return []
        if first is None:
            self._ids.put(None)  # wake the other threads too
            return None
        taken = [first]
        while len(taken) < batch:
            try:
                more = self._ids.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._ids.put(None)
                break
            taken.append(more)
        return taken

    def close(self) -> None:
        self._ids.put(None)
