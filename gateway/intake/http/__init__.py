"""The Flask service: app factory, one blueprint per protocol."""

from gateway.intake.http.app import create_app

__all__ = ["create_app"]
