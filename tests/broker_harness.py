"""The real RabbitMQ and PostgreSQL of this machine, isolated per test: a fresh vhost and a
fresh database, removed afterwards. Locally a test skips with the reason when one is absent;
with ``CI`` set it fails (``.ci/run`` starts them when they are not running).

``restart_broker()`` restarts the RabbitMQ application (``rabbitmqctl stop_app`` +
``start_app``): every connection drops, durable queues and persistent messages survive, as
in a broker restart.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

AMQP = ("127.0.0.1", 5672)
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _absent(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs {reason} (.ci/run starts it)", pytrace=False)
    pytest.skip(reason)


def _reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=2):
            return True
    except OSError:
        return False


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture()
def broker_url() -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None or not _reachable(AMQP):
        _absent("RabbitMQ on 127.0.0.1:5672 with rabbitmqctl")
    vhost = f"deid-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60, check=False)


def restart_broker() -> None:
    _rabbitmqctl("stop_app")
    _rabbitmqctl("start_app")
    deadline = time.monotonic() + 60
    while not _reachable(AMQP):
        if time.monotonic() > deadline:
            raise AssertionError("RabbitMQ did not come back")
        time.sleep(0.2)


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - absent or refusing: the reason is the message
        _absent(f"PostgreSQL on 127.0.0.1:5432 ({type(exc).__name__})")
    name = f"deid_test_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
