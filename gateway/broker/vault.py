"""The re-identification vault: what the gateway issued (pseudonym -> original), sealed.

Rows are written by whoever settles a payload's outcome, in the same commit (the service's
job engine; the CLI after its run), so nothing counts as delivered that the broker could not
map back. A row is AES-256-GCM under the broker key with its destination, kind and pseudonym
as associated data. Pseudonyms are stored as they are (keyed hashes: they reveal nobody), so
a look-up is one indexed query and the mapping export needs no key but the broker's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.broker.keys import BrokerKey
from gateway.errors import ConfigurationError, ReasonCode
from gateway.linkage.issued import Issued, IssuedKind
from gateway.persistence.db import Database
from gateway.persistence.models import VaultEntry, utcnow

NONCE_BYTES = 12


@dataclass(frozen=True)
class Found:
    """An opened vault row. ``original`` and ``context`` are PHI: never logged."""

    destination: str
    kind: IssuedKind
    pseudonym: str
    original: str = field(repr=False)
    context: dict[str, str] = field(default_factory=dict, repr=False)


class Vault:
    """Seal, record, find. Thread-safe (the cipher holds no state between calls)."""

    def __init__(self, db: Database, key: BrokerKey) -> None:
        self.db = db
        self.key = key
        self._aead = AESGCM(key.aead_key)
        # what this process has recorded and seen committed: a study's or a series' UID comes
        # with each of its instances, and is sealed and inserted only with the first
        self._recorded: set[tuple[str, str, str, int]] = set()

    # -- sealing --------------------------------------------------------------------------
    @staticmethod
    def _aad(destination: str, kind: str, pseudonym: str) -> bytes:
        return json.dumps([destination, kind, pseudonym], separators=(",", ":")).encode()

    def seal(self, destination: str, entry: Issued) -> bytes:
        plain = json.dumps({"o": entry.original, "c": list(entry.context)}).encode("utf-8")
        nonce = os.urandom(NONCE_BYTES)
        aad = self._aad(destination, entry.kind.value, entry.pseudonym)
        return nonce + self._aead.encrypt(nonce, plain, aad)

    def open(self, row: VaultEntry) -> Found:
        aad = self._aad(row.destination, row.kind, row.pseudonym)
        try:
            plain = self._aead.decrypt(row.sealed[:NONCE_BYTES], row.sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise ConfigurationError(
                ReasonCode.KEY_MISSING, "a vault row does not open with this broker key"
            ) from None
        data = json.loads(plain)
        return Found(
            row.destination,
            IssuedKind(row.kind),
            row.pseudonym,
            str(data["o"]),
            {str(k): str(v) for k, v in data.get("c") or ()},
        )

    # -- recording ------------------------------------------------------------------------
    def record(self, session: Session, destination: str, entries: Iterable[Issued]) -> int:
        """Insert in the caller's transaction; a pseudonym recorded already is left as it is,
        unless the new entry brings context (the patient or study module) the old one lacks."""
        plain: dict[tuple[str, str], dict[str, Any]] = {}
        rich: dict[tuple[str, str], dict[str, Any]] = {}
        now = utcnow()
        fresh = []
        for entry in entries:
            seen = (destination, entry.kind.value, entry.pseudonym, hash(entry.context))
            if seen in self._recorded:
                continue
            fresh.append(seen)
            row = {
                "destination": destination,
                "kind": entry.kind.value,
                "pseudonym": entry.pseudonym[:128],
                "sealed": self.seal(destination, entry),
                "created_at": now,
            }
            (rich if entry.context else plain)[(entry.kind.value, entry.pseudonym)] = row
        insert = insert_for(session)
        table = VaultEntry.__table__
        keys = ["destination", "kind", "pseudonym"]
        if plain:
            session.execute(
                insert(table).on_conflict_do_nothing(index_elements=keys), list(plain.values())
            )
        if rich:
            statement = insert(table)
            statement = statement.on_conflict_do_update(
                index_elements=keys, set_={"sealed": statement.excluded.sealed}
            )
            session.execute(statement, list(rich.values()))
        if fresh:
            event.listen(session, "after_commit", lambda _s: self._remember(fresh), once=True)
        return len(plain) + len(rich)

    def _remember(self, recorded: list[tuple[str, str, str, int]]) -> None:
        if len(self._recorded) > 500_000:
            self._recorded.clear()
        self._recorded.update(recorded)

    def record_many(self, destination: str, entries: Sequence[Issued]) -> int:
        """Record in a transaction of its own (the CLI after its run)."""
        with self.db.session() as session:
            return self.record(session, destination, entries)

    # -- reading --------------------------------------------------------------------------
    def find(self, value: str, destination: str | None = None) -> list[Found]:
        """Every row whose pseudonym is ``value`` (``urn:oid:``/``urn:uuid:`` prefixes and a
        FHIR base URL before ``Type/id`` are taken off), optionally in one destination."""
        candidates = _forms(value)
        query = select(VaultEntry).where(VaultEntry.pseudonym.in_(candidates))
        if destination is not None:
            query = query.where(VaultEntry.destination == destination)
        with self.db.session() as session:
            rows = list(session.scalars(query.order_by(VaultEntry.id)))
        return [self.open(row) for row in rows]

    def rows(self, kinds: Sequence[IssuedKind], destination: str | None = None) -> Iterator[Found]:
        query = select(VaultEntry).where(VaultEntry.kind.in_([k.value for k in kinds]))
        if destination is not None:
            query = query.where(VaultEntry.destination == destination)
        with self.db.session() as session:
            rows = list(session.scalars(query.order_by(VaultEntry.id)))
        for row in rows:
            yield self.open(row)

    def reseal(self, new: Vault, batch: int = 500) -> int:
        """Rotate the broker key: every row opened with this key and sealed with ``new``'s,
        in transactions of ``batch`` rows (a row that no longer opens with this key was
        resealed by an interrupted earlier run and is skipped). Returns the rows resealed."""
        done = 0
        last = 0
        while True:
            with self.db.session() as session:
                rows = list(
                    session.scalars(
                        select(VaultEntry)
                        .where(VaultEntry.id > last)
                        .order_by(VaultEntry.id)
                        .limit(batch)
                    )
                )
                if not rows:
                    return done
                for row in rows:
                    last = row.id
                    try:
                        found = self.open(row)
                    except ConfigurationError:
                        new.open(row)  # already under the new key, or neither: refuse
                        continue
                    context = tuple(found.context.items())
                    entry = Issued(found.kind, found.pseudonym, found.original, context)
                    row.sealed = new.seal(row.destination, entry)
                    done += 1


def _forms(value: str) -> list[str]:
    value = value.strip()
    out = [value]
    for prefix in ("urn:oid:", "urn:uuid:"):
        if value.startswith(prefix):
            out.append(value[len(prefix) :])
    parts = value.rstrip("/").split("/")
    if len(parts) > 2 and "://" in value:  # https://base/Type/id -> Type/id
        out.append("/".join(parts[-2:]))
    return out


def insert_for(session: Session) -> Any:
    """The dialect's INSERT with ON CONFLICT (SQLite and PostgreSQL both have it)."""
    name = session.get_bind().dialect.name
    return postgresql.insert if name == "postgresql" else sqlite.insert
