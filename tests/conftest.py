"""Shared fixtures: a test key from the environment, never a key file in $HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

TEST_KEY = "test-key-" + "0123456789abcdef" * 3
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _test_key(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> str:
    monkeypatch.setenv("DEID_GATEWAY_KEY", TEST_KEY)
    monkeypatch.setenv("DEID_GATEWAY_KEY_DIR", str(tmp_path_factory.mktemp("keys")))
    return TEST_KEY


REQUIRED_IN_CI = ("tesseract", "Orthanc", "dciodvfy")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Locally, tests needing an absent program skip with a reason; CI must run them all."""
    import os
    import shutil

    if os.environ.get("CI"):
        path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
        missing = [name for name in REQUIRED_IN_CI if shutil.which(name, path=path) is None]
        if missing:
            pytest.exit(f"CI needs {', '.join(missing)} installed (scripts/install.sh)", returncode=3)
