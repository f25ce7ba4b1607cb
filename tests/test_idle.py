"""Idle, the gateway does nothing: no polling. New work is delivered (an in-process queue, or
RabbitMQ), and the only timer (the housekeeper) runs a few indexed queries every
``housekeeping_seconds``. Measured as CPU time of every process of the server over a quiet
interval, from ``/proc``."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.broker_harness import broker_url, postgres_url  # noqa: F401
from tests.test_scale_out import Workers
from tests.test_service_crash import GatewayProcess, cli, service_env, write_config

QUIET_SECONDS = 6.0
MAX_CPU_FRACTION = 0.02  # of one core, for the whole process tree


def _tree_cpu_seconds(pgid: int) -> float:
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _quiet_cpu(pgids: list[int]) -> float:
    time.sleep(3.0)  # start-up finished (the housekeeper's first round included)
    before = sum(_tree_cpu_seconds(g) for g in pgids)
    time.sleep(QUIET_SECONDS)
    return (sum(_tree_cpu_seconds(g) for g in pgids) - before) / QUIET_SECONDS


def test_an_idle_embedded_server_uses_no_cpu(tmp_path: Path) -> None:
    env = service_env(tmp_path / "home")
    config = write_config(tmp_path / "gateway.yaml", tmp_path / "data", workers=2)
    server = GatewayProcess(config, env, tmp_path / "serve.log").start(["--processes", "2"])
    try:
        assert server.proc is not None
        fraction = _quiet_cpu([server.proc.pid])
    finally:
        server.kill()
    assert fraction < MAX_CPU_FRACTION, f"idle server used {fraction:.1%} of a core"


@pytest.mark.slow
def test_idle_intake_and_workers_on_the_broker_use_no_cpu(
    tmp_path: Path, broker_url: str, postgres_url: str,  # noqa: F811
) -> None:
    env = service_env(tmp_path / "home")
    config = write_config(tmp_path / "gateway.yaml", tmp_path / "data", workers=0,
                          database_url=postgres_url, queue={"broker_url": broker_url})
    subprocess.run([*cli(), "token", "create", "--role", "admin", "--config", str(config)],
                   env=env, check=True, capture_output=True, timeout=60)  # the schema exists
    server = GatewayProcess(config, env, tmp_path / "serve.log").start()
    pool = Workers(config, env, tmp_path)
    worker = pool.start(concurrency=2)
    try:
        assert server.proc is not None
        time.sleep(3.0)  # the workers connected
        fraction = _quiet_cpu([server.proc.pid, worker.pid])
    finally:
        server.kill()
        pool.stop_all()
    assert fraction < MAX_CPU_FRACTION, f"idle intake and workers used {fraction:.1%} of a core"
