"""A real server in a child process for tests: start (with retries), readiness, stop (a crash
by default). The Orthanc and FHIR-server harnesses differ only in command and readiness."""

from __future__ import annotations

import atexit
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import requests


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcessError(RuntimeError):
    pass


class ServerProcess:
    """``start()``/``stop()`` may be called repeatedly; the subclass says how to run and when
    the server is ready."""

    name = "server"
    start_timeout = 20.0
    poll_seconds = 0.05

    def __init__(self, workdir: Path, log_name: str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / log_name
        self._process: subprocess.Popen[bytes] | None = None
        self._http = requests.Session()
        self._http.trust_env = False

    # -- what a subclass provides -------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def cwd(self) -> Path:
        return self.workdir

    def ready(self) -> bool:
        """True once the server answers; raise ServerProcessError when it never will."""
        raise NotImplementedError

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        last: Exception | None = None
        for _ in range(3):  # a port in TIME_WAIT or a slow exit of the previous process
            try:
                self._spawn()
                return
            except ServerProcessError as exc:
                last = exc
                time.sleep(0.5)
        raise ServerProcessError(f"{self.name} did not start; see {self.log_path}") from last

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.cwd(), start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise ServerProcessError(f"{self.name} exited during start-up")
            try:
                if self.ready():
                    return
            except requests.RequestException:
                pass
            except ServerProcessError:
                self.stop()
                raise
            time.sleep(self.poll_seconds)
        self.stop()
        raise ServerProcessError(f"{self.name} did not become ready in time")

    def stop(self, graceful: bool = False) -> None:
        """The server goes down: at once by default (SIGKILL, a crash); ``graceful`` sends
        SIGTERM and waits for the server's own shutdown."""
        process, self._process = self._process, None
        self._http.close()  # pooled connections to the old process
        if process is None or process.poll() is not None:
            return
        if graceful:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
                return
            except subprocess.TimeoutExpired:
                pass
        process.kill()
        process.wait(timeout=10)


S = TypeVar("S", bound=ServerProcess)


def serve_for_session(server: S) -> Iterator[S]:
    """Body of a session fixture: started once, stopped at the end even if interrupted."""
    atexit.register(server.stop)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        atexit.unregister(server.stop)
