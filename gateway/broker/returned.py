"""Which UIDs (and FHIR ``Type/id``) of the partner's own results reached the clinic, per
destination, value-free.

The new UIDs of a returned object are deterministic from the partner's UIDs (see
``ReturnResolver.mint_uid``), so a later object that cites one (an SR citing the SEG returned
before it) maps to the same new UID without storing it; what must be stored is only *that*
the partner returned an object with that UID, so an unknown UID (a pseudonym never issued, a
typo, another project's object) is still quarantined. Rows hold a SHA-256 of destination and
UID (not keyed: a broker key rotation leaves them valid), written once the object is stored.
A returned FHIR resource is recorded by the partner's ``Type/id`` in the same way (its new id
is deterministic from it too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import select

from gateway.broker.vault import insert_for
from gateway.persistence.db import Database
from gateway.persistence.models import Item, ItemStatus, ReturnedObject, utcnow

#: an item that may still be stored (a retry: its store was down)
UNSETTLED = (ItemStatus.RECEIVED, ItemStatus.PROCESSING, ItemStatus.RETRY)


def digest(destination: str, uid: str) -> str:
    return hashlib.sha256(f"{destination}|{uid}".encode()).hexdigest()


class ReturnedUids:
    """Record and ask, for one database (thread-safe: no state but the database)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, destination: str, uids: Iterable[str]) -> int:
        rows = [
            {"destination": destination, "digest": d, "created_at": utcnow()}
            for d in sorted({digest(destination, u) for u in uids})
        ]
        if not rows:
            return 0
        with self.db.session() as session:
            statement = insert_for(session)(ReturnedObject.__table__).on_conflict_do_nothing(
                index_elements=["destination", "digest"]
            )
            session.execute(statement, rows)
        return len(rows)

    def contains(self, destination: str, uid: str) -> bool:
        query = select(ReturnedObject.id).where(
            ReturnedObject.destination == destination,
            ReturnedObject.digest == digest(destination, uid),
        )
        with self.db.session() as session:
            return session.scalars(query.limit(1)).first() is not None

    def earlier_unsettled(self, item_id: str) -> bool:
        """Whether an earlier part of this item's request (same job, lower seq) may still be
        stored: a part citing it then waits (retry) instead of being quarantined. Earlier
        parts only: the partner sends what is cited first, and two parts never wait for each
        other."""
        with self.db.session() as session:
            item = session.get(Item, item_id)
            if item is None:
                return False
            query = select(Item.id).where(
                Item.job_id == item.job_id, Item.seq < item.seq, Item.status.in_(UNSETTLED)
            )
            return session.scalars(query.limit(1)).first() is not None
