"""One vocabulary of outcomes: typed errors with reason codes, and the one mapping from any
exception to a reason.

Messages are templates without values: a value may be PHI, so no exception raised by the
gateway ever carries the content of the data it was processing. Every error names its reason
(a :class:`ReasonCode`), the stage that raised it and the HTTP status an intake answers with.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ReasonCode(str, Enum):
    """Why something was refused, quarantined or held. Stable strings: they end up in reason
    files, database rows, HTTP answers, the CLI summary and the audit."""

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
    PATIENT_PENDING = "pending-patient"
    UNSUPPORTED_INPUT = "unsupported-input"
    INTERNAL_ERROR = "internal-error"
    PROFILE_INVALID = "profile-invalid"
    CONFIGURATION_INVALID = "configuration-invalid"
    KEY_MISSING = "key-missing"
    SIGNOFF_MISSING = "signoff-missing"  # a destination's profile hash is not signed off
    USAGE = "usage"
    STORE_UNAVAILABLE = "store-unavailable"
    STORE_REJECTED = "store-rejected"
    PAYLOAD_MISSING = "payload-missing"
    DUPLICATE_INSTANCE = "duplicate-instance"
    CONFLICTING_INSTANCE = "conflicting-instance"
    # refusals at an intake's door (HTTP, DIMSE): the request, not an item, is refused
    BAD_MULTIPART = "bad-multipart"
    BAD_BUNDLE_TYPE = "bad-bundle-type"
    EMPTY_REQUEST = "empty-request"
    ID_MISMATCH = "id-mismatch"
    TYPE_MISMATCH = "type-mismatch"
    NOT_A_BUNDLE = "not-a-bundle"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNKNOWN_DESTINATION = "unknown-destination"
    UNKNOWN_JOB = "unknown-job"
    TOO_LARGE = "too-large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    SPOOL_WRITE_FAILED = "spool-write-failed"
    NO_DATASET = "no-dataset"
    ACCEPT_FAILED = "accept-failed"
    STUDY_MISMATCH = "study-mismatch"
    CALLING_AE_NOT_ALLOWED = "calling-ae-not-allowed"
    # back-pressure: intake refuses new work for a while (503 / 0xA700) instead of filling up
    BACKLOG_FULL = "backlog-full"
    SPOOL_LOW = "spool-low"
    # the honest broker and the way back (results returned by a partner)
    REASON_REQUIRED = "reason-required"  # a look-up or export without a stated reason
    UNKNOWN_PSEUDONYM = "unknown-pseudonym"  # not issued by this gateway (or its vault is off)
    FOREIGN_PSEUDONYM = "foreign-pseudonym"  # issued for another destination
    VAULT_OFF = "vault-off"  # no destination keeps a vault: nothing can be re-identified
    # a FHIR result on a patient known only from DICOM, looked up in the clinic by its MRN
    REGISTER_UNDECLARED = "register-undeclared"  # no FHIR system declared for its register
    PATIENT_NOT_FOUND = "patient-not-found"  # the clinical FHIR server has no such Patient
    PATIENT_AMBIGUOUS = "patient-ambiguous"  # ... or several
    # a returned object citing one its request holds in an earlier part not yet stored: waits
    AWAITING_RETURNED = "awaiting-returned-object"
    # cohort export (pull): the cohort file, the sources, the export job
    COHORT_INVALID = "cohort-invalid"
    SOURCE_UNAVAILABLE = "source-unavailable"
    SOURCE_REFUSED = "source-refused"
    UNKNOWN_EXPORT = "unknown-export"
    EXPORT_RUNNING = "export-running"  # another process runs this export now


class DeidError(Exception):
    """Base error. ``detail`` is a template-safe explanation that never contains data values.

    ``http_status`` is what an intake answers when this error refuses a request; the pipeline
    turns the same error into an outcome (quarantine, drop, retry, pending) by its class."""

    http_status = 422
    default_reason: ReasonCode = ReasonCode.INTERNAL_ERROR
    default_stage: str | None = None

    def __init__(
        self,
        reason: ReasonCode | None = None,
        detail: str = "",
        *,
        stage: str | None = None,
        ref: str | None = None,
    ) -> None:
        self.reason = reason or self.default_reason
        self.detail = detail
        self.stage = stage or self.default_stage
        self.ref = ref
        message = f"{self.reason.value}: {detail}" if detail else self.reason.value
        super().__init__(message)

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
    default_reason = ReasonCode.CONFIGURATION_INVALID


class UsageError(DeidError):
    """The caller asked for something the command or endpoint does not take."""

    http_status = 400
    default_reason = ReasonCode.USAGE


class PatientPending(DeidError):
    """The payload names a patient the identity index does not know yet: it waits."""

    http_status = 202
    default_reason = ReasonCode.PATIENT_PENDING
    default_stage = "identity"

    def __init__(
        self, id_hash: str, detail: str = "waits for its Patient", learned: tuple[str, ...] = ()
    ) -> None:
        super().__init__(detail=detail)
        self.id_hash = id_hash
        self.learned = learned  # identity hashes the same payload taught the index


class StoreError(DeidError):
    """A research store failed; the subclass says whether waiting can help."""

    default_stage = "forward"

    def __init__(self, detail: str = "", *, reason: ReasonCode | None = None) -> None:
        super().__init__(reason, detail)


class StoreUnavailable(StoreError):
    """The store cannot be reached now: the item waits and is retried with backoff."""

    http_status = 503
    default_reason = ReasonCode.STORE_UNAVAILABLE


class StoreRejected(StoreError):
    """The store refused the data for good (4xx): the item goes to quarantine with the reason."""

    http_status = 502
    default_reason = ReasonCode.STORE_REJECTED


class IntakeUnavailable(DeidError):
    """The gateway cannot persist what it was sent now (data volume full, database not
    writable): nothing was kept or acknowledged, and the sender should try again later
    (HTTP 503 with Retry-After, DIMSE 0xA700 out of resources)."""

    http_status = 503
    default_reason = ReasonCode.SPOOL_WRITE_FAILED
    default_stage = "intake"
    retry_after_seconds = 30

    def __init__(
        self,
        reason: ReasonCode | None = None,
        detail: str = "",
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(reason, detail)
        if retry_after is not None:
            self.retry_after_seconds = retry_after


class RequestRefused(DeidError):
    """An intake refuses a request at its door; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: ReasonCode, detail: str = "") -> None:
        super().__init__(reason, detail, stage="intake")
        self.http_status = status

    @property
    def status(self) -> int:
        return self.http_status

    @property
    def code(self) -> str:
        return self.reason.value


class DuplicateInstance(DeidError):
    """The store already holds this instance, byte for byte: delivered once."""

    default_reason = ReasonCode.DUPLICATE_INSTANCE
    default_stage = "store"

    def __init__(self) -> None:
        super().__init__(detail="the same instance was delivered before; stored once")


class ConflictingInstance(QuarantineError):
    """The store holds another instance under the same UIDs: this one is not delivered."""

    default_reason = ReasonCode.CONFLICTING_INSTANCE
    default_stage = "store"

    def __init__(self) -> None:
        super().__init__(
            detail="an instance with the same SOPInstanceUID and other content was delivered before"
        )


#: Library exceptions by class, in order: the first that matches names the reason. Their
#: messages are never used (they may quote values).
_LIBRARY_REASONS: tuple[tuple[tuple[type[BaseException], ...], ReasonCode, str], ...] = (
    ((EOFError, OSError), ReasonCode.TRUNCATED, "read failed"),
    ((RecursionError,), ReasonCode.UNSUPPORTED_INPUT, "nested too deeply"),
    (
        (ValueError, UnicodeError, OverflowError),
        ReasonCode.UNDECODABLE_VALUE,
        "a value cannot be processed",
    ),
)


def classify_exception(exc: BaseException) -> DeidError:
    """The one mapping from any exception to a typed error. A DeidError is itself; a library
    exception becomes a QuarantineError with a value-free detail (its class name only);
    anything else is ``internal-error`` (fail closed: quarantined, never forwarded)."""
    if isinstance(exc, DeidError):
        return exc
    name = type(exc).__name__
    if "truncat" in name.lower():
        return QuarantineError(ReasonCode.TRUNCATED, f"read failed ({name})", stage="intake")
    for classes, reason, text in _LIBRARY_REASONS:
        if isinstance(exc, classes):
            return QuarantineError(reason, f"{text} ({name})", stage="deidentify")
    return QuarantineError(
        ReasonCode.INTERNAL_ERROR, f"unexpected failure ({name})", stage="deidentify"
    )
