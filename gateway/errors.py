"""Typed errors with reason codes.

Messages are templates without values: a value may be PHI, so no exception raised by the
gateway ever carries the content of the data it was processing.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ReasonCode(str, Enum):
    """Why something was refused or quarantined. Stable strings: they end up in reason files."""

    NOT_DICOM = "not-dicom"
    TRUNCATED = "truncated"
    MISSING_META = "missing-file-meta"
    UNDECODABLE_VALUE = "undecodable-value"
    MISSING_UID = "missing-required-uid"
    VERIFICATION_FAILED = "verification-failed"
    PIXEL_CLEANER_UNAVAILABLE = "pixel-cleaner-unavailable"
    PIXEL_PHI_REMAINS = "pixel-phi-remains"
    PIXEL_DECODE_FAILED = "pixel-decode-failed"
    DICOMDIR_DROPPED = "dicomdir-dropped"
    ENCAPSULATED_DOCUMENT_DROPPED = "encapsulated-document-dropped"
    NOT_FHIR = "not-fhir"
    FHIR_INVALID = "fhir-invalid"
    UNRESOLVED_PATIENT = "unresolved-patient"
    UNSUPPORTED_INPUT = "unsupported-input"
    INTERNAL_ERROR = "internal-error"
    PROFILE_INVALID = "profile-invalid"
    KEY_MISSING = "key-missing"


class DeidError(Exception):
    """Base error. ``detail`` is a template-safe explanation that never contains data values."""

    http_status = 422

    def __init__(
        self,
        reason: ReasonCode,
        detail: str = "",
        *,
        stage: str | None = None,
        ref: str | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.stage = stage
        self.ref = ref
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason.value, "detail": self.detail}
        if self.stage:
            out["stage"] = self.stage
        if self.ref:
            out["ref"] = self.ref
        return out


class QuarantineError(DeidError):
    """Raised by a pipeline stage when the item cannot be made safe: it goes to quarantine."""


class DropError(DeidError):
    """Raised when the profile says an item is intentionally not delivered (e.g. a DICOMDIR)."""


class ConfigurationError(DeidError):
    """Bad profile, missing key or similar: the gateway refuses to start rather than fail open."""

    http_status = 500
