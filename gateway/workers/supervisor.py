"""N worker processes kept running: one that dies (kill -9, out of memory) is replaced.

Each process consumes from the broker itself (Celery's solo pool) instead of a parent that
receives every message and passes it down a pipe to a pool (prefork): no hand-off between
processes and no parent using a core's worth of CPU for it. A process killed mid-task loses
its broker connection, so RabbitMQ delivers its unacknowledged message again, flagged as
redelivered, to another process.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

#: a process that dies sooner than this after its start counts as failing to start
QUICK_DEATH_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 30.0


def supervise(count: int, target: Callable[[], int], poll_seconds: float = 0.5) -> int:
    """Run ``target()`` in ``count`` processes until SIGTERM or SIGINT, which each process
    gets in turn (Celery's warm shutdown: running tasks finish, then their messages are
    acknowledged). A process that dies is started again, after a pause that doubles (up to
    ``MAX_BACKOFF_SECONDS``) while it keeps dying young: a broken configuration does not spin."""
    context = multiprocessing.get_context("fork")
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    slots: dict[int, BaseProcess] = {}
    started: dict[int, float] = {}
    backoff: dict[int, float] = dict.fromkeys(range(count), 0.0)
    due: dict[int, float] = dict.fromkeys(range(count), 0.0)
    try:
        while not stopping:
            now = time.monotonic()
            for slot in range(count):
                process = slots.get(slot)
                if process is not None and process.is_alive():
                    continue
                if process is not None:  # it died: replace it, later if it died young
                    process.join()
                    young = now - started[slot] < QUICK_DEATH_SECONDS
                    backoff[slot] = (
                        min(MAX_BACKOFF_SECONDS, 2 * backoff[slot] or 1.0) if young else 0.0
                    )
                    due[slot] = now + backoff[slot]
                    del slots[slot]
                if now >= due[slot]:
                    slots[slot] = context.Process(target=_run, args=(target,), daemon=False)
                    slots[slot].start()
                    started[slot] = now
            time.sleep(poll_seconds)
    finally:
        for process in slots.values():
            if process.is_alive():
                process.terminate()  # SIGTERM: a warm shutdown
        for process in slots.values():
            process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _run(target: Callable[[], int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):  # the worker installs its own
        signal.signal(sig, signal.SIG_DFL)
    raise SystemExit(target())
