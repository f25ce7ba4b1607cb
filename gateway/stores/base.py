"""What a research store promises: idempotent puts, and a typed error when it is unreachable
(:class:`StoreUnavailable`) or refuses the data (:class:`StoreRejected`). Both are DeidErrors
of the one outcome vocabulary (``gateway.errors``)."""

from __future__ import annotations

from typing import Any, Protocol

from pydicom.dataset import Dataset

from gateway.errors import StoreRejected, StoreUnavailable

__all__ = ["ResearchStore", "StoreRejected", "StoreUnavailable"]


class ResearchStore(Protocol):
    name: str

    def put_dicom(self, ds: Dataset) -> str:
        """Store one instance; the same instance twice leaves one copy. Returns a reference
        made of pseudonymised UIDs only."""

    def put_fhir(self, resources: list[dict[str, Any]]) -> list[str]:
        """Store resources (idempotent by type/id). Returns ``Type/id`` references."""
