"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for the DICOMweb store tests.

Usage in a test module::

    from tests import orthanc_harness

    orthanc_server = orthanc_harness.orthanc_server  # fixtures
    orthanc = orthanc_harness.orthanc

    def test_x(orthanc: OrthancServer) -> None:
        store = DicomwebStore(orthanc.dicomweb_url)

``orthanc_server`` (session scope) starts one Orthanc per pytest process (per xdist worker) on
127.0.0.1 with a free HTTP port and a free DICOM port, its storage and index in a temporary
folder, the DICOMweb plugin at ``/dicom-web/``; ``orthanc`` (function scope) hands it to a test
running and empty. ``stop()`` / ``start()`` simulate the store going down and coming back on the
same ports. Orthanc's own log goes to ``log_path``, never to the test output.

Locally the tests skip with a reason when the binary or the plugin is absent; with ``CI`` set
they fail instead (CI installs them via scripts/install.sh). Overrides: ``ORTHANC_BIN``,
``ORTHANC_DICOMWEB_PLUGIN``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.server_process import ServerProcess, ServerProcessError, free_port, serve_for_session

BINARY_NAME = "Orthanc"  # Debian package "orthanc" installs /usr/sbin/Orthanc
PLUGIN_NAME = "libOrthancDicomWeb.so"  # Debian package "orthanc-dicomweb"
BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/local/sbin/Orthanc", "/usr/bin/Orthanc")
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
)
DICOMWEB_ROOT = "/dicom-web/"
START_TIMEOUT = 20.0


def find_binary() -> str | None:
    override = os.environ.get("ORTHANC_BIN")
    if override:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which(BINARY_NAME)  # /usr/sbin is not on every user's PATH
    if found:
        return found
    return next((c for c in BINARY_CANDIDATES if os.access(c, os.X_OK)), None)


def find_plugin() -> str | None:
    override = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if override:
        return override if os.path.isfile(override) else None
    for pattern in PLUGIN_CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                return path
    return None


def missing_reason() -> str | None:
    """Why Orthanc cannot run here (None when it can)."""
    if find_binary() is None:
        return f"Orthanc binary '{BINARY_NAME}' not found (apt-get install orthanc)"
    if find_plugin() is None:
        return f"Orthanc DICOMweb plugin '{PLUGIN_NAME}' not found (apt-get install orthanc-dicomweb)"
    return None


OrthancError = ServerProcessError


class OrthancServer(ServerProcess):
    """One Orthanc process; ``start()``/``stop()`` may be called repeatedly (same ports, same
    storage: what was stored before a stop is there after the restart)."""

    name = "Orthanc"
    start_timeout = START_TIMEOUT
    poll_seconds = 0.02

    def __init__(self, workdir: Path, binary: str, plugin: str, extra: dict[str, Any] | None = None):
        super().__init__(workdir, "orthanc.log")
        self.binary = binary
        self.plugin = plugin
        self.http_port = free_port()
        self.dicom_port = free_port()
        while self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        self.config_path = self.workdir / "orthanc.json"
        config = self.config(extra or {})
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    # -- addresses ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.base_url + DICOMWEB_ROOT.rstrip("/")

    def config(self, extra: dict[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": "deid-gateway-tests",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANCTEST",
            "RemoteAccessAllowed": False,  # HTTP answers 127.0.0.1 only
            "AuthenticationEnabled": False,
            # the DICOM port listens on all interfaces (no bind option): accept nothing unasked
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckCalledAet": True,
            "DicomModalities": {},
            "OverwriteInstances": True,  # the same SOPInstanceUID twice: one instance
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
            "StorageCompression": False,
            "Plugins": [self.plugin],
            "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False,
                         "Host": "127.0.0.1", "Ssl": False},
        }
        config.update(extra)
        return config

    # -- ServerProcess ------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [self.binary, str(self.config_path)]

    def ready(self) -> bool:
        if self._http.get(self.base_url + "/system", timeout=1).status_code != 200:
            return False
        if "dicom-web" not in self._http.get(self.base_url + "/plugins", timeout=2).json():
            raise OrthancError("the DICOMweb plugin did not load")
        return True

    # -- content -----------------------------------------------------------------------------
    def rest(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self._http.request(method, self.base_url + path, timeout=10, **kwargs)
        response.raise_for_status()
        return response

    def instance_ids(self) -> list[str]:
        return list(self.rest("GET", "/instances").json())

    def instance_count(self) -> int:
        return int(self.rest("GET", "/statistics").json()["CountInstances"])

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.rest("GET", f"/instances/{orthanc_id}/file").content

    def clear(self) -> None:
        for patient in self.rest("GET", "/patients").json():
            self.rest("DELETE", f"/patients/{patient}")


def _require() -> tuple[str, str]:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs Orthanc: {reason} (scripts/install.sh)", pytrace=False)
        pytest.skip(reason)
    binary, plugin = find_binary(), find_plugin()
    assert binary is not None and plugin is not None
    return binary, plugin


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    binary, plugin = _require()
    yield from serve_for_session(OrthancServer(tmp_path_factory.mktemp("orthanc"), binary, plugin))


@pytest.fixture()
def orthanc(orthanc_server: OrthancServer) -> OrthancServer:
    """The session's Orthanc, running (a test that stopped it may have failed) and empty."""
    orthanc_server.start()
    orthanc_server.clear()
    return orthanc_server
