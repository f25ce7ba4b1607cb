"""What a research store promises: idempotent puts, and a typed error when it is unreachable."""

from __future__ import annotations

from typing import Any, Protocol

from pydicom.dataset import Dataset


class StoreUnavailable(Exception):
    """The store cannot be reached now: the item waits and is retried with backoff."""


class StoreRejected(Exception):
    """The store refused the data for good (4xx): the item goes to quarantine with the reason."""


class ResearchStore(Protocol):
    name: str

    def put_dicom(self, ds: Dataset) -> str:
        """Store one instance; the same instance twice leaves one copy. Returns a reference
        made of pseudonymised UIDs only."""

    def put_fhir(self, resources: list[dict[str, Any]]) -> list[str]:
        """Store resources (idempotent by type/id). Returns ``Type/id`` references."""
