"""Workbench sign-in: a bearer token, entered once in a form, opens a server-side session.

The browser holds only a random cookie (HttpOnly, SameSite=Strict, Secure behind TLS); the
database holds its SHA-256, so a leaked database opens no session. Each session has its own
CSRF token that every form carries. Revoking the token closes its sessions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select

from gateway.persistence.db import Database
from gateway.persistence.models import Token, WorkbenchSession, utcnow
from gateway.persistence.tokens import Principal, Role, authenticate

COOKIE = "deid_workbench"
SIGNIN_CSRF_COOKIE = "deid_workbench_signin"
LIFETIME = dt.timedelta(hours=8)

#: who may sign in to the workbench at all (each page names its own roles too)
WORKBENCH_ROLES = frozenset({Role.PRIVACY_OFFICER, Role.ADMIN})


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def sign_in(db: Database, token: str) -> tuple[str, Principal] | Principal | None:
    """(cookie value, principal) for a workbench role; the Principal alone for a valid token
    whose role may not use the workbench; None for an unknown or revoked token."""
    principal = authenticate(db, token.strip())
    if principal is None:
        return None
    if principal.role not in WORKBENCH_ROLES:
        return principal
    cookie = secrets.token_urlsafe(32)
    now = utcnow()
    with db.session() as session:
        session.execute(delete(WorkbenchSession).where(WorkbenchSession.expires_at < now))
        session.add(
            WorkbenchSession(
                id_hash=_hash(cookie),
                token_id=principal.token_id,
                csrf=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + LIFETIME,
            )
        )
    return cookie, principal


def session_of(db: Database, cookie: str | None) -> Session | None:
    if not cookie:
        return None
    with db.session() as session:
        row = session.execute(
            select(WorkbenchSession, Token)
            .join(Token, Token.id == WorkbenchSession.token_id)
            .where(WorkbenchSession.id_hash == _hash(cookie))
        ).first()
        if row is None:
            return None
        found, token = row
        expires = found.expires_at
        if expires.tzinfo is None:  # SQLite returns naive datetimes
            expires = expires.replace(tzinfo=dt.UTC)
        if token.revoked or expires < utcnow():
            return None
        return Session(Principal(token.id, Role(token.role)), found.csrf)


def sign_out(db: Database, cookie: str | None) -> None:
    if cookie:
        with db.session() as session:
            session.execute(
                delete(WorkbenchSession).where(WorkbenchSession.id_hash == _hash(cookie))
            )


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens (absent never matches)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def new_csrf() -> str:
    return secrets.token_urlsafe(32)
