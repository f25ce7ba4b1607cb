"""How views reach the service core (built once, outside Flask, by ``build_gateway``)."""

from __future__ import annotations

from flask import current_app

from gateway.service import EXTENSION, Gateway

__all__ = ["EXTENSION", "Gateway", "gateway"]


def gateway() -> Gateway:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
