"""Build the service for tests: real Flask app, real SQLite (or PostgreSQL), real stores."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pydicom
from flask import Flask

from gateway.config import load_config
from gateway.intake.http import create_app
from gateway.intake.http.context import EXTENSION, Gateway
from gateway.persistence.tokens import Role, create_token
from gateway.service import build_gateway


def make_app(data_dir: Path, start_workers: bool = False, **overrides: Any) -> Flask:
    config = load_config(data_dir=data_dir, **overrides)
    core = build_gateway(config)
    if start_workers:
        core.start_workers()
    return create_app(core)


def gw(app: Flask) -> Gateway:
    return app.extensions[EXTENSION]  # type: ignore[no-any-return]


def token(app: Flask, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(gw(app).db, role)}"}


def multipart(datasets: list[pydicom.Dataset], extra_parts: list[tuple[str, bytes]] = ()) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    parts = []
    for ds in datasets:
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        parts.append(("application/dicom", buffer.getvalue()))
    parts.extend(extra_parts)
    for content_type, payload in parts:
        body.write(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        body.write(payload)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f'multipart/related; type="application/dicom"; boundary={boundary}'
