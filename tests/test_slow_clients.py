"""Slow clients against a running ``deid-gateway serve`` (issue 13): 50 connections that
trickle their headers, or promise a body they never send, must not stall the service; and a
large STOW-RS request costs about its largest part in memory, not its size."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.test_service_crash import GatewayProcess, create_token, service_env, write_config

SLOW_CLIENTS = 50
ANSWER_WITHIN = 2.0


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[GatewayProcess, str]]:
    env = service_env(tmp_path / "home")
    config = write_config(tmp_path / "gateway.yaml", tmp_path / "data", workers=1)
    sender = create_token(config, env, "sender")
    process = GatewayProcess(config, env, tmp_path / "server.log")
    process.start()
    try:
        yield process, sender
    finally:
        process.kill()


class Trickler:
    """Connections that send a request's start, then one byte now and then, never finishing."""

    def __init__(self, port: int, count: int, token: str) -> None:
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        for number in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if number % 2:  # headers trickled
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            else:  # a body promised and never sent
                sock.sendall(
                    b"POST /fhir HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
                    b"Authorization: Bearer " + token.encode() + b"\r\n"
                    b"Content-Length: 100000\r\n\r\n{"
                )
            self.sockets.append(sock)
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(0.5):
            for sock in self.sockets:
                try:
                    sock.send(b"X")
                except OSError:
                    continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()


def test_fifty_slow_clients_do_not_stall_the_service(server: tuple[GatewayProcess, str]) -> None:
    process, sender = server
    trickler = Trickler(process.port, SLOW_CLIENTS, sender)
    try:
        time.sleep(1.0)  # every slow connection has been accepted and is trickling
        for _ in range(5):
            started = time.monotonic()
            response = requests.get(f"{process.url}/healthz", timeout=ANSWER_WITHIN)
            elapsed = time.monotonic() - started
            assert response.status_code == 200
            assert elapsed < ANSWER_WITHIN, elapsed
            response = requests.get(f"{process.url}/readyz", timeout=ANSWER_WITHIN)
            assert response.status_code == 200
            time.sleep(0.3)
    finally:
        trickler.close()


# -- memory: parts stream to the spool ---------------------------------------------------------
PART_BYTES = 24 * 1024 * 1024
PARTS = 4
SLACK_BYTES = 16 * 1024 * 1024  # "a few MB": interpreter, buffers, the response


def big_instance(number: int) -> bytes:
    import io

    import numpy as np
    import pydicom

    from tests.dicom_fixtures import Patient, phi_instance

    ds = phi_instance("CT_small.dcm", Patient(), "memory-study", "CT", number)
    side = int((PART_BYTES // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4096, size=(side, side), dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def high_water_mark(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture()
def idle_server(tmp_path: Path) -> Iterator[tuple[GatewayProcess, str]]:
    """No pipeline workers: what is measured is the request alone."""
    env = service_env(tmp_path / "home")
    config = write_config(tmp_path / "gateway.yaml", tmp_path / "data", workers=0)
    sender = create_token(config, env, "sender")
    process = GatewayProcess(config, env, tmp_path / "server.log")
    process.start()
    try:
        yield process, sender
    finally:
        process.kill()


def test_a_large_stow_costs_about_its_largest_part_in_memory(
    idle_server: tuple[GatewayProcess, str], tmp_path: Path,
) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read a process's peak memory")
    process, sender = idle_server
    assert process.proc is not None
    from tests.service_helpers import multipart

    _, content_type = multipart([])
    boundary = content_type.rsplit("=", 1)[1]
    parts = [big_instance(n) for n in range(1, PARTS + 1)]
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    ) + f"--{boundary}--\r\n".encode()
    headers = {"Authorization": f"Bearer {sender}", "Content-Type": content_type}
    warm, warm_type = multipart([])  # one small request first: imports and pools are warm
    requests.post(f"{process.url}/dicomweb/studies", data=warm, timeout=30,
                  headers={**headers, "Content-Type": warm_type})
    (worker,) = worker_pids(process.proc.pid)
    try:  # reset the peak to the current size (Linux >= 4.0): start-up peaks hide nothing
        Path(f"/proc/{worker}/clear_refs").write_text("5")
    except OSError:
        pass
    before = high_water_mark(worker)

    import io

    response = requests.post(f"{process.url}/dicomweb/studies", data=io.BytesIO(body),
                             timeout=120, headers=headers)  # streamed, with Content-Length
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["00081199"]["Value"]) == PARTS
    grown = high_water_mark(worker) - before
    largest = max(len(p) for p in parts)
    print(f"request {len(body) / 1e6:.1f} MB, largest part {largest / 1e6:.1f} MB, "
          f"worker peak memory grew {grown / 1e6:.1f} MB")
    assert grown <= largest + SLACK_BYTES, (grown, largest)
    spooled = sorted(p for p in (tmp_path / "data" / "spool").rglob("*.dcm"))
    assert sorted(p.stat().st_size for p in spooled) == sorted(len(p) for p in parts)
