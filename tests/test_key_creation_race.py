"""Processes that start together on a fresh machine create the embedded default keys once.

Gunicorn workers, Celery workers and the CLI's job processes all load the pseudonymisation key
and the broker key on start. On first use the key file does not exist yet, so several of them
race to create it. Every one must come away with the same key: none may fail, and none may read
a file another has created but not yet written (CI saw exactly that: "broker key material is
missing" in one of three processes started at once).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.broker.keys import load_broker_key
from gateway.linkage.keys import load_key

RACERS = 8
ROUNDS = 25


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith(("DEID_GATEWAY_KEY", "DEID_GATEWAY_BROKER")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def _race(load: Callable[[], bytes]) -> list[bytes | BaseException]:
    barrier = threading.Barrier(RACERS)
    results: list[bytes | BaseException] = [b""] * RACERS

    def run(slot: int) -> None:
        barrier.wait()
        try:
            results[slot] = load()
        except BaseException as exc:  # noqa: BLE001 - the test reports what each racer got
            results[slot] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def _assert_one_key(results: list[bytes | BaseException], path: Path) -> None:
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    assert len(set(results)) == 1
    assert path.read_text("utf-8").strip()  # the file that won holds the key everyone got
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize(
    ("load", "file_name"),
    [
        (lambda: load_key("default").secret, "default.key"),
        (lambda: load_broker_key().secret, "broker.key"),
    ],
    ids=["pseudonymisation-key", "broker-key"],
)
def test_racing_processes_get_one_key(
    key_env: Path, monkeypatch: pytest.MonkeyPatch, load: Callable[[], bytes], file_name: str
) -> None:
    for round_ in range(ROUNDS):
        key_dir = key_env / f"keys-{round_}"
        monkeypatch.setenv("DEID_GATEWAY_KEY_DIR", str(key_dir))
        _assert_one_key(_race(load), key_dir / file_name)


def test_a_key_created_between_the_check_and_the_create_is_read_not_refused(
    key_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window is small; make it certain: the file appears after ``exists()`` said no."""
    key_dir = key_env / "keys"
    monkeypatch.setenv("DEID_GATEWAY_KEY_DIR", str(key_dir))
    first = load_key("default").secret
    monkeypatch.setattr(Path, "exists", lambda self: False)
    assert load_key("default").secret == first
    broker = load_broker_key().secret
    assert load_broker_key().secret == broker
