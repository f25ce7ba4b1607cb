"""The honest broker's two acts, each audited: look up one pseudonym, export the mappings.

A look-up needs a stated reason; every one, hit or miss, leaves an audit row with who, when,
the reason and the kind of identifier (never the value asked about, never the original), so
that the audit itself reveals nobody. The HTTP view and the command line call the same code.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.broker.vault import Found, Vault
from gateway.errors import DeidError, ReasonCode, UsageError
from gateway.linkage.issued import IssuedKind
from gateway.persistence.db import Database
from gateway.persistence.models import AuditEvent

MIN_REASON_CHARS = 3
MAX_REASON_CHARS = 2000

#: The export's tables: file name -> the kinds of pseudonym it holds (columns id_old,id_new).
EXPORT_TABLES: dict[str, tuple[IssuedKind, ...]] = {
    "uid_mapping.csv": (IssuedKind.UID,),
    "patid_mapping.csv": (IssuedKind.PATIENT,),
}


class NotInVault(DeidError):
    """No row has this pseudonym (never issued here, or issued with the vault off)."""

    http_status = 404
    default_reason = ReasonCode.UNKNOWN_PSEUDONYM
    default_stage = "broker"


@dataclass(frozen=True)
class Caller:
    """Who asks: a token id (or ``cli:<user>``) and its role."""

    actor: str | None
    role: str


@dataclass(frozen=True)
class Answer:
    kind: IssuedKind
    destination: str
    original: str = field(repr=False)

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "original": self.original, "destination": self.destination}


def checked_reason(reason: object) -> str:
    """The stated reason, or a usage error: a look-up without one is refused (and not run)."""
    text = reason.strip() if isinstance(reason, str) else ""
    if len(text) < MIN_REASON_CHARS:
        raise UsageError(ReasonCode.REASON_REQUIRED, "a reason for the look-up is required")
    return text[:MAX_REASON_CHARS]


class HonestBroker:
    def __init__(self, db: Database, vault: Vault) -> None:
        self.db = db
        self.vault = vault

    def lookup(self, value: object, reason: object, caller: Caller) -> Answer:
        """The original of one pseudonym. Refused (400) without a reason; a miss is a 404 and,
        like a hit, audited."""
        stated = checked_reason(reason)
        if not isinstance(value, str) or not value.strip():
            raise UsageError(detail="value must be a pseudonym (a non-empty string)")
        found = self.vault.find(value)
        hit = _best(found)
        self._audit(
            "broker:lookup",
            caller,
            stated,
            destination=hit.destination if hit else None,
            kind=hit.kind.value if hit else None,
            counts={"hits": 1 if hit else 0},
        )
        if hit is None:
            raise NotInVault(detail="no such pseudonym in the vault")
        return Answer(hit.kind, hit.destination, hit.original)

    def export(
        self, reason: object, caller: Caller, destination: str | None = None
    ) -> dict[str, str]:
        """The mapping tables (``uid_mapping.csv``, ``patid_mapping.csv``: id_old,id_new) as
        CSV text by file name; audited with the row counts."""
        stated = checked_reason(reason)
        tables: dict[str, str] = {}
        counts: dict[str, int] = {}
        for name, kinds in EXPORT_TABLES.items():
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["id_old", "id_new"])
            rows = 0
            for row in self.vault.rows(kinds, destination):
                writer.writerow([row.original, row.pseudonym])
                rows += 1
            tables[name] = buffer.getvalue()
            counts[name.removesuffix(".csv")] = rows
        self._audit("broker:export", caller, stated, destination=destination, counts=counts)
        return tables

    def audit_rekey(self, reason: object, caller: Caller, rows: int) -> None:
        self._audit("broker:rekey", caller, checked_reason(reason), counts={"rows": rows})

    def _audit(
        self,
        action: str,
        caller: Caller,
        reason: str,
        *,
        destination: str | None = None,
        kind: str | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        with self.db.session() as session:
            session.add(
                AuditEvent(
                    actor=(caller.actor or "")[:32] or None,
                    role=caller.role,
                    action=action,
                    destination=destination,
                    counts=counts,
                    note=reason,  # the stated reason
                    identifier_kind=kind,
                )
            )


#: When a value is a pseudonym of several kinds (never in practice: their forms differ), the
#: answer names the most specific.
_PREFERENCE: Sequence[IssuedKind] = (
    IssuedKind.PATIENT,
    IssuedKind.UID,
    IssuedKind.ACCESSION,
    IssuedKind.FHIR_ID,
    IssuedKind.IDENTIFIER,
    IssuedKind.UUID,
)


def _best(found: list[Found]) -> Found | None:
    if not found:
        return None
    return min(found, key=lambda f: _PREFERENCE.index(f.kind))
