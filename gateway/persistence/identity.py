"""The persistent identity index: the same person gets the same person key — so the same
pseudonym and date offset — whatever arrives, in any order, in any process.

Identifiers are stored as keyed hashes only (HMAC with the destination's key), linked to a
person key (itself keyed). Links are inserted under a unique constraint, so concurrent workers
never create two person keys for one identifier: the loser of a race reads the winner's link.

A link, once in the table, never changes (a conflict is recorded beside it, never merged), so
each process remembers the links it has read or written: the second instance of a patient
costs no query.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.fhir.resolver import FALLBACK_NAMESPACE, ResourceKey
from gateway.linkage.context import Linkage
from gateway.linkage.pseudonym import RESOLVED_NAMESPACE, PersonRef
from gateway.persistence.db import Database
from gateway.persistence.models import IdentityConflict, IdentityLink
from gateway.text.context import PhiContext

KNOWN_LINKS_MAX = 200_000  # links remembered per process and destination (about 40 MB)


@dataclass
class Learned:
    person_key: str
    hashes: list[str] = field(default_factory=list)  # every id hash of this person seen now
    new_links: list[str] = field(default_factory=list)  # id hashes newly linked
    conflicts: int = 0


class IdentityIndex:
    """Per destination. Implements the FHIR PatientResolver protocol."""

    def __init__(
        self, db: Database, destination: str, linkage: Linkage, source: str = "fhir"
    ) -> None:
        self.db = db
        self.destination = destination
        self.linkage = linkage
        self.source = source
        self._known: dict[str, tuple[int, str]] = {}  # id_hash -> (link id, person key)
        self._known_lock = threading.Lock()

    def _remember(self, rows: list[tuple[str, int, str]]) -> None:
        with self._known_lock:
            if len(self._known) > KNOWN_LINKS_MAX:
                self._known.clear()
            for id_hash, link_id, person_key in rows:
                self._known[id_hash] = (link_id, person_key)

    # -- hashing ---------------------------------------------------------------------------
    def id_hash(self, kind: str, value: str) -> str:
        return self.linkage.pseudonymizer.digest(f"identity-index/{kind}", value).hex()

    def patient_id_hash(self, logical_id: str, source: str | None = None) -> str:
        """The hash of a FHIR Patient logical id as seen from a source (ids are per server)."""
        return self.id_hash("fhir-id", f"{source or self.source}|{logical_id}")

    def identifier_hash(self, system: str, value: str) -> str:
        return self.id_hash("fhir-identifier", f"{system}|{value.strip()}")

    def person_hash(self, ref: PersonRef) -> str:
        return self.id_hash("person", ref.canonical())

    # -- lookups ---------------------------------------------------------------------------
    def lookup(self, id_hash: str) -> str | None:
        rows = self._lookup_many([id_hash])
        return rows[0][1] if rows else None

    def _lookup_many(self, hashes: list[str]) -> list[tuple[str, str]]:
        """(id_hash, person_key) of the known ones, oldest link first."""
        if not hashes:
            return []
        known = self._known
        found = [(h, *known[h]) for h in hashes if h in known]
        unknown = [h for h in hashes if h not in known]
        if unknown:
            with self.db.session() as session:
                rows = session.execute(
                    select(IdentityLink.id_hash, IdentityLink.id, IdentityLink.person_key).where(
                        IdentityLink.destination == self.destination,
                        IdentityLink.id_hash.in_(unknown),
                    )
                ).all()
            read = [(str(h), int(i), str(k)) for h, i, k in rows]
            self._remember(read)
            found += read
        found.sort(key=lambda row: row[1])
        return [(h, k) for h, _, k in found]

    # -- learning --------------------------------------------------------------------------
    def learn(self, links: list[tuple[str, str]], default_key: str) -> Learned:
        """Link ``(kind, id_hash)`` pairs to one person: the person already known for any of
        them (the oldest link wins), else ``default_key``. Conflicts are recorded, not merged."""
        rows = self._lookup_many([h for _, h in links])
        known = dict(rows)
        person_key = rows[0][1] if rows else default_key
        learned = Learned(person_key, hashes=[h for _, h in links])
        for kind, h in links:
            if h in known:
                if known[h] != person_key:
                    self._conflict(h, person_key, known[h])
                    learned.conflicts += 1
                continue
            winner = self._insert(kind, h, person_key)
            if winner != person_key:
                self._conflict(h, person_key, winner)
                learned.conflicts += 1
            else:
                learned.new_links.append(h)
        return learned

    def _insert(self, kind: str, id_hash: str, person_key: str) -> str:
        try:
            with self.db.session() as session:
                link = IdentityLink(
                    destination=self.destination,
                    id_hash=id_hash,
                    kind=kind,
                    person_key=person_key,
                )
                session.add(link)
                session.flush()
                link_id = link.id
            self._remember([(id_hash, link_id, person_key)])  # committed
            return person_key
        except IntegrityError:  # another worker linked it first: theirs stands
            found = self.lookup(id_hash)
            return found or person_key

    def _conflict(self, id_hash: str, kept: str, other: str) -> None:
        with self.db.session() as session:
            session.add(
                IdentityConflict(
                    destination=self.destination,
                    id_hash=id_hash,
                    kept_person_key=kept,
                    other_person_key=other,
                )
            )

    def learn_patient(self, resource: dict[str, Any], source: str | None = None) -> Learned:
        """A Patient passed: link its logical id and every identifier to one person."""
        identity = self.linkage.identity
        links: list[tuple[str, str]] = []
        default_ref: PersonRef | None = None
        for identifier in resource.get("identifier") or []:
            if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
                continue
            system, value = str(identifier.get("system") or ""), identifier["value"]
            ref = identity.from_fhir(system, value)
            if ref is not None:
                links.append(("person", self.person_hash(ref)))
                default_ref = default_ref or ref
            links.append(("fhir-identifier", self.identifier_hash(system, value)))
        logical_id = resource.get("id")
        if isinstance(logical_id, str) and logical_id:
            links.insert(0, ("fhir-id", self.patient_id_hash(logical_id, source)))
            default_ref = default_ref or PersonRef(FALLBACK_NAMESPACE, logical_id)
        if default_ref is None:
            default_ref = PersonRef(FALLBACK_NAMESPACE, "")
        return self.learn(links, self.linkage.pseudonymizer.person_key(default_ref))

    def learn_dicom(self, patient_id: str, issuer: str | None) -> str:
        """A DICOM instance passed: its person key (linked earlier, or derived now)."""
        ref = self.linkage.identity.from_dicom(patient_id, issuer)
        return self.learn(
            [("person", self.person_hash(ref))], self.linkage.pseudonymizer.person_key(ref)
        ).person_key

    # -- PatientResolver -------------------------------------------------------------------
    def person_by_id(self, logical_id: str) -> PersonRef | None:
        key = self.lookup(self.patient_id_hash(logical_id))
        return PersonRef(RESOLVED_NAMESPACE, key) if key else None

    def person_by_identifier(self, system: str, value: str) -> PersonRef | None:
        key = self.lookup(self.identifier_hash(system, value))
        if key:
            return PersonRef(RESOLVED_NAMESPACE, key)
        return self.linkage.identity.from_fhir(system, value)

    def person_by_full_url(self, full_url: str) -> PersonRef | None:
        return None

    def resource_by_full_url(self, full_url: str) -> ResourceKey | None:
        return None

    def phi_context(self, person: PersonRef) -> PhiContext | None:
        return None  # the index keeps no names: free text relies on the payload's own Patient
