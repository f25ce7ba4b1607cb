"""The intake's background hand-over: requests never wait for the broker, ids accepted while a
publish is under way (or within the linger) share a message, and a failed publish leaves the
rows for the housekeeper."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from gateway.pipeline.handover import BackgroundHandOver


class SlowBroker:
    """Records each publish; the first one blocks until released (a broker under load)."""

    def __init__(self) -> None:
        self.published: list[list[str]] = []
        self.release = threading.Event()

    def __call__(self, ids: Sequence[str]) -> None:
        if not self.published:
            self.published.append(list(ids))
            self.release.wait(5)
            return
        self.published.append(list(ids))


def test_ids_given_while_a_publish_waits_go_out_together_and_the_caller_never_waits() -> None:
    broker = SlowBroker()
    failed: list[str] = []
    hand_over = BackgroundHandOver(broker, failed.extend, batch=16)
    started = time.monotonic()
    hand_over(["a"])
    while not broker.published:  # the first publish is under way (and stuck)
        time.sleep(0.005)
    for name in ("b", "c", "d"):
        hand_over([name])
    assert time.monotonic() - started < 1.0, "a caller waited for the broker"
    broker.release.set()
    assert hand_over.flush(5)
    assert broker.published == [["a"], ["b", "c", "d"]]
    assert failed == []


def test_the_linger_fills_a_message_and_batch_size_ends_it() -> None:
    published: list[list[str]] = []
    hand_over = BackgroundHandOver(published.append, lambda ids: None, batch=4, linger_seconds=1.0)
    started = time.monotonic()
    for name in "abcd":
        hand_over([name])
    assert hand_over.flush(5)
    assert published == [["a", "b", "c", "d"]]
    assert time.monotonic() - started < 0.9, "a full batch waited for the linger to run out"
    hand_over(["e"])  # alone: goes out once the linger has passed
    assert hand_over.flush(5)
    assert published[-1] == ["e"]


def test_a_failed_publish_reports_its_ids_and_later_ones_still_go() -> None:
    calls: list[list[str]] = []
    failed: list[str] = []

    def broker(ids: Sequence[str]) -> None:
        calls.append(list(ids))
        if len(calls) == 1:
            raise ConnectionError("broker down")

    hand_over = BackgroundHandOver(broker, failed.extend)
    hand_over(["x", "y"])
    assert hand_over.flush(5)
    hand_over(["z"])
    assert hand_over.flush(5)
    assert failed == ["x", "y"]
    assert calls == [["x", "y"], ["z"]]


def test_a_request_stays_in_one_message_unless_it_is_larger_than_a_batch() -> None:
    published: list[list[str]] = []
    hand_over = BackgroundHandOver(published.append, lambda ids: None, batch=16, linger_seconds=1.0)
    requests = [[f"r{r}-{i}" for i in range(5)] for r in range(4)]  # 20 ids: more than a batch
    for ids in requests:
        hand_over(ids)
    assert hand_over.flush(5)
    # 5 + 5 + 5 fit; the fourth request is not cut to fill the first message to 16
    assert published == [requests[0] + requests[1] + requests[2], requests[3]]


def test_pack_keeps_order_and_splits_only_a_request_larger_than_a_batch() -> None:
    from gateway.pipeline.handover import pack

    big = [f"b{i}" for i in range(10)]
    assert pack([["a1", "a2"], big, ["c1"]], 4) == [
        ["a1", "a2"],
        ["b0", "b1", "b2", "b3"],
        ["b4", "b5", "b6", "b7"],
        ["b8", "b9", "c1"],
    ]
    assert pack([], 4) == []
    assert [i for m in pack([["x"] * 3, ["y"] * 3, ["z"]], 4) for i in m] == ["x"] * 3 + ["y"] * 3 + ["z"]
    assert all(len(m) <= 4 for m in pack([["x"] * 3, ["y"] * 3, ["z"] * 9], 4))
