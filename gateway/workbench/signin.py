"""Sign in with a token (a form), sign out. The sign-in form has no session yet, so its CSRF
token is a double-submit cookie; every later form carries the session's own."""

from __future__ import annotations

from flask import Response, redirect, request

from gateway.persistence.tokens import Role
from gateway.workbench.sessions import (
    COOKIE,
    LIFETIME,
    SIGNIN_CSRF_COOKIE,
    new_csrf,
    same,
    sign_in,
    sign_out,
)
from gateway.workbench.web import blueprint, gateway, page, render

HOME = "/workbench/profiles"


def _next() -> str:
    """Only a workbench path (no open redirect to another site)."""
    target = request.values.get("next") or HOME
    return target if target.startswith("/workbench/") and "//" not in target else HOME


def _secure() -> bool:
    """Secure cookies over TLS, and behind a TLS proxy (``public_url`` is https)."""
    public = gateway().config.public_url or ""
    return request.is_secure or public.lower().startswith("https://")


def _form(status: int = 200, error: str = "") -> Response:
    csrf = request.cookies.get(SIGNIN_CSRF_COOKIE) or new_csrf()
    response = render(
        "signin.html", status=status, csrf=csrf, next=_next(), error=error, title="Sign in"
    )
    response.set_cookie(
        SIGNIN_CSRF_COOKIE,
        csrf,
        httponly=True,
        samesite="Strict",
        secure=_secure(),
        path="/workbench/",
    )
    return response


@blueprint.get("/signin")
def signin_form() -> Response:
    return _form()


@blueprint.post("/signin")
def signin() -> Response:
    if not same(request.form.get("csrf"), request.cookies.get(SIGNIN_CSRF_COOKIE)):
        return _form(403, "The form expired. Please enter your token again.")
    result = sign_in(gateway().db, request.form.get("token", ""))
    if result is None:
        return _form(401, "That token is unknown or revoked.")
    if not isinstance(result, tuple):
        return _form(403, f"The role {result.role.value} may not use the workbench.")
    cookie, _ = result
    response = redirect(_next(), code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(LIFETIME.total_seconds()),
        httponly=True,
        samesite="Strict",
        secure=_secure(),
        path="/workbench/",
    )
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/workbench/")
    return response  # type: ignore[return-value]


@blueprint.post("/signout")
@page(Role.PRIVACY_OFFICER)
def signout() -> Response:
    sign_out(gateway().db, request.cookies.get(COOKIE))
    response = redirect("/workbench/signin", code=303)
    response.delete_cookie(COOKIE, path="/workbench/")
    return response  # type: ignore[return-value]


@blueprint.get("/")
@page(Role.PRIVACY_OFFICER)
def home() -> Response:
    return redirect(HOME, code=303)  # type: ignore[return-value]
