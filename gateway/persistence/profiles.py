"""Profile versions by content hash and their sign-offs (issue 14).

A sign-off names the hash of the *effective* profile (``extends`` resolved), the hash every
de-identified instance carries: a file changed after its sign-off has another hash and needs a
sign-off of its own. Rows hold profile text, names and statements of staff: never PHI.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gateway.persistence.db import Database
from gateway.persistence.models import AuditEvent, ProfileSignoff, ProfileVersion
from gateway.profiles.model import Profile

SIGNOFF_ACTION = "profile:signoff"


@dataclass(frozen=True)
class ProfileRecord:
    """What is stored of one profile version (built from a compiled profile by the caller:
    persistence does not compile)."""

    content_hash: str
    name: str
    version: str
    source_file: str
    text: str
    effective: str

    @classmethod
    def of(cls, profile: Profile, text: str, source_file: str) -> ProfileRecord:
        """The record of a validated profile read from ``text`` (its file, for ``extends``)."""
        return cls(
            content_hash=profile.content_hash,
            name=profile.name,
            version=profile.version,
            source_file=source_file,
            text=text,
            effective=json.dumps(profile.model_dump(mode="json"), sort_keys=True),
        )


@dataclass(frozen=True)
class Signoff:
    content_hash: str
    signed_by: str
    statement: str
    signed_at: dt.datetime


@dataclass(frozen=True)
class VersionSummary:
    """A stored version without its text (what ``profile versions`` lists)."""

    content_hash: str
    name: str
    version: str
    source_file: str
    saved_by: str
    saved_at: dt.datetime
    signoffs: tuple[Signoff, ...]


def save_version(db: Database, record: ProfileRecord, saved_by: str) -> bool:
    """Keep ``record`` unless its hash is stored already; True when it was new."""
    with db.session() as session:
        if session.get(ProfileVersion, record.content_hash) is not None:
            return False
        session.add(_row(record, saved_by))
        return True


def sign_off(db: Database, record: ProfileRecord, signed_by: str, statement: str) -> Signoff:
    """Store the version (if new), the sign-off and its audit row in one transaction."""
    with db.session() as session:
        if session.get(ProfileVersion, record.content_hash) is None:
            session.add(_row(record, signed_by))
            session.flush()
        row = ProfileSignoff(
            content_hash=record.content_hash, signed_by=signed_by, statement=statement
        )
        session.add(row)
        session.flush()
        session.add(
            AuditEvent(
                actor=signed_by[:32],
                action=SIGNOFF_ACTION,
                profile_hash=record.content_hash,
                counts={"signoff_id": row.id},
            )
        )
        return _signoff(row)


def signed_hashes(db: Database, hashes: Iterable[str]) -> set[str]:
    """Which of ``hashes`` have at least one sign-off."""
    wanted = set(hashes)
    if not wanted:
        return set()
    with db.session() as session:
        found = session.scalars(
            select(ProfileSignoff.content_hash).where(ProfileSignoff.content_hash.in_(wanted))
        )
        return set(found)


def get_version(db: Database, content_hash: str) -> ProfileRecord | None:
    with db.session() as session:
        row = session.get(ProfileVersion, content_hash)
        if row is None:
            return None
        return ProfileRecord(
            row.content_hash, row.name, row.version, row.source_file, row.text, row.effective
        )


def list_versions(db: Database) -> list[VersionSummary]:
    """Every stored version, oldest first, with its sign-offs."""
    with db.session() as session:
        rows = session.scalars(
            select(ProfileVersion)
            .options(selectinload(ProfileVersion.signoffs))
            .order_by(ProfileVersion.saved_at, ProfileVersion.content_hash)
        )
        return [
            VersionSummary(
                r.content_hash,
                r.name,
                r.version,
                r.source_file,
                r.saved_by,
                r.saved_at,
                tuple(_signoff(s) for s in r.signoffs),
            )
            for r in rows
        ]


def _row(record: ProfileRecord, saved_by: str) -> ProfileVersion:
    return ProfileVersion(
        content_hash=record.content_hash,
        name=record.name,
        version=record.version,
        source_file=record.source_file,
        text=record.text,
        effective=record.effective,
        saved_by=saved_by,
    )


def _signoff(row: ProfileSignoff) -> Signoff:
    return Signoff(row.content_hash, row.signed_by, row.statement, row.signed_at)
