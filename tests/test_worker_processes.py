"""``deid-gateway worker --concurrency N``: N processes, each consuming from RabbitMQ itself;
one killed with SIGKILL is replaced, SIGTERM stops them all (real RabbitMQ and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.broker_harness import broker_url, postgres_url  # noqa: F401
from tests.test_service_crash import cli, service_env, write_config

pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _wait_for(predicate: object, timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, why
        time.sleep(0.1)


def test_a_killed_worker_process_is_replaced_and_sigterm_stops_every_one(
    tmp_path: Path, broker_url: str, postgres_url: str,  # noqa: F811
) -> None:
    config = write_config(tmp_path / "gateway.yaml", tmp_path / "data", workers=0,
                          database_url=postgres_url, queue={"broker_url": broker_url})
    log = tmp_path / "worker.log"
    with open(log, "ab") as out:
        parent = subprocess.Popen(
            [*cli(), "worker", "--config", str(config), "--concurrency", "2"],
            stdout=out, stderr=subprocess.STDOUT, env=service_env(tmp_path / "home"),
            start_new_session=True,
        )
    try:
        _wait_for(lambda: len(_children(parent.pid)) == 2, 60, log.read_text(errors="replace"))
        first = _children(parent.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: len(_children(parent.pid) - {victim}) == 2, 30,
                  "the killed process was not replaced\n" + log.read_text(errors="replace"))
        after = _children(parent.pid)
        assert victim not in after and (first - {victim}) <= after
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0, log.read_text(errors="replace")
        assert [pid for pid in after if Path(f"/proc/{pid}").exists()] == [], "a process outlived it"
        assert "Traceback" not in log.read_text(errors="replace")
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
