"""Every workbench page, registered on the one blueprint (importing the modules registers
them)."""

from __future__ import annotations

from gateway.workbench import (  # noqa: F401 - imported for their routes
    identity_pages,
    preview_pages,
    profile_pages,
    quarantine_pages,
    signin,
)
from gateway.workbench.web import blueprint

__all__ = ["blueprint"]
