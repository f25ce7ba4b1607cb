"""Bearer tokens with roles, stored as SHA-256 hashes (a leaked database reveals no token)."""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from gateway.persistence.db import Database
from gateway.persistence.models import AuditEvent, Token


class Role(str, enum.Enum):
    SENDER = "sender"
    PRIVACY_OFFICER = "privacy-officer"
    HONEST_BROKER = "honest-broker"
    ADMIN = "admin"
    PARTNER = "partner"  # a research partner returning results, for one destination


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: Role
    destination: str | None = None  # a partner token's destination (its only one)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    db: Database, role: Role, label: str | None = None, destination: str | None = None
) -> str:
    """``destination``: the one destination a partner token may return results to."""
    token = "dg_" + secrets.token_urlsafe(32)
    with db.session() as session:
        session.add(
            Token(token_hash=_hash(token), role=role.value, label=label, destination=destination)
        )
    return token


def authenticate(db: Database, token: str) -> Principal | None:
    with db.session() as session:  # three columns, no ORM object: one per request
        row = session.execute(
            select(Token.id, Token.role, Token.destination, Token.revoked).where(
                Token.token_hash == _hash(token)
            )
        ).first()
        if row is None or row.revoked:
            return None
        return Principal(row.id, Role(row.role), row.destination)


@dataclass(frozen=True)
class TokenInfo:
    """What ``token list`` shows of a token: never the token, nor its hash."""

    token_id: str
    role: str
    label: str | None
    destination: str | None
    created_at: str
    revoked: bool


def list_tokens(db: Database) -> list[TokenInfo]:
    with db.session() as session:
        rows = session.scalars(select(Token).order_by(Token.created_at, Token.id))
        return [
            TokenInfo(
                r.id,
                r.role,
                r.label,
                r.destination,
                r.created_at.isoformat(timespec="seconds"),
                r.revoked,
            )
            for r in rows
        ]


def revoke_token(db: Database, token_id: str, by: str) -> bool:
    """Revoke by id (audited); False when there is no such token. Its next request is refused
    and its workbench sessions end, in every process: nothing caches a token."""
    with db.session() as session:
        row = session.get(Token, token_id)
        if row is None:
            return False
        if not row.revoked:
            row.revoked = True
            session.add(
                AuditEvent(
                    actor=by[:32],
                    role=row.role,
                    action="token:revoke",
                    counts={"token": 1},
                    note=f"token {token_id}",
                )
            )
        return True
