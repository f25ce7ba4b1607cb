"""What a payload's processing issued: pseudonym -> original, collected for the broker vault.

The pseudonymiser notes every value it issues here; the runner collects the notes of one
payload (a context variable, so threads and payloads never mix) and hands them with the
outcome to whoever settles it, which seals them into the vault in the same commit as the
item's row. Nothing is collected outside :func:`collecting`: the CLI without a vault and the
previews pay one context-variable read per pseudonym.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


class IssuedKind(str, enum.Enum):
    """Which kind of identifier a pseudonym replaces (the audit names it, never the value)."""

    PATIENT = "patient"  # DICOM PatientID pseudonym (= FHIR Patient.id pseudonym)
    UID = "uid"  # any remapped DICOM UID / urn:oid
    UUID = "uuid"  # urn:uuid pseudonyms
    ACCESSION = "accession"
    IDENTIFIER = "identifier"  # other identifiers (FHIR Identifier, DICOM LO/SH IDs)
    FHIR_ID = "fhir-id"  # Type/id logical ids


@dataclass(frozen=True)
class Issued:
    """One pseudonym and what it replaced; ``context`` the original attributes a return needs
    (the patient module of a patient, the study module of a study). Holds PHI: never logged."""

    kind: IssuedKind
    pseudonym: str
    original: str = field(repr=False)
    context: tuple[tuple[str, str], ...] = field(default=(), repr=False)


class IssuedLog:
    """The notes of one payload, one entry per pseudonym (a later note with context wins)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[IssuedKind, str], Issued] = {}

    def add(self, entry: Issued) -> None:
        key = (entry.kind, entry.pseudonym)
        known = self._entries.get(key)
        if known is None or (entry.context and not known.context):
            self._entries[key] = entry

    def entries(self) -> tuple[Issued, ...]:
        return tuple(self._entries.values())


_CURRENT: ContextVar[IssuedLog | None] = ContextVar("deid_gateway_issued", default=None)


def note(
    kind: IssuedKind,
    pseudonym: str,
    original: str,
    context: tuple[tuple[str, str], ...] = (),
) -> None:
    """Record an issued pseudonym when a payload is being collected (else nothing)."""
    log = _CURRENT.get()
    if log is not None and pseudonym != original:
        log.add(Issued(kind, pseudonym, original, context))


def is_collecting() -> bool:
    """Whether notes are kept now (a caller with work of its own to note can skip it)."""
    return _CURRENT.get() is not None


@contextmanager
def collecting(enabled: bool = True) -> Iterator[IssuedLog]:
    """Collect the notes of the block (a fresh log; the previous one is restored after)."""
    log = IssuedLog()
    token = _CURRENT.set(log if enabled else None)
    try:
        yield log
    finally:
        _CURRENT.reset(token)
