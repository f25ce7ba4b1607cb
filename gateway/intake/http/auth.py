"""Bearer tokens with roles on every endpoint but health."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g, request

from gateway.errors import ReasonCode
from gateway.intake.http.context import gateway
from gateway.intake.http.errors import ApiError
from gateway.persistence.tokens import Principal, Role, authenticate

F = TypeVar("F", bound=Callable[..., Any])


def require(*roles: Role, admin: bool = True) -> Callable[[F], F]:
    """``admin=False``: admin is not implied (re-identification is the honest broker's alone;
    separation of duties, listed in ``roles.ADMIN_EXCLUDED``)."""
    allowed = {*roles, Role.ADMIN} if admin else set(roles)

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            if not header.lower().startswith("bearer "):
                raise ApiError(401, ReasonCode.UNAUTHORIZED, "a bearer token is required")
            principal = authenticate(gateway().db, header[7:].strip())
            if principal is None:
                raise ApiError(401, ReasonCode.UNAUTHORIZED, "unknown or revoked token")
            if principal.role not in allowed:
                raise ApiError(
                    403, ReasonCode.FORBIDDEN, f"role {principal.role.value} may not do this"
                )
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.required_roles = frozenset(roles)  # type: ignore[attr-defined]  # checked by tests
        return wrapper  # type: ignore[return-value]

    return decorate


def principal() -> Principal:
    return g.principal  # type: ignore[no-any-return]
