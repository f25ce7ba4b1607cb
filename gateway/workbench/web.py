"""The workbench's blueprint and the one guard every page goes through: a signed-in session of
an allowed role, and on every POST the session's CSRF token. Pages are server-rendered
(Jinja2, autoescaped) with one vendored stylesheet and one small script, served from the
package: hospital networks have no internet, so nothing is fetched from elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
)

from gateway.persistence.tokens import Principal, Role
from gateway.service import EXTENSION, Gateway
from gateway.workbench.sessions import COOKIE, Session, same, session_of

F = TypeVar("F", bound=Callable[..., Any])

HERE = Path(__file__).parent
STATIC = HERE / "static"


def gateway() -> Gateway:
    """The service core the app was built with (the workbench is a door like the others)."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


blueprint = Blueprint("workbench", __name__, url_prefix="/workbench", template_folder="templates")

#: no script, style, image or frame from anywhere but the gateway (previews are data: URIs)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@blueprint.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def page(*roles: Role) -> Callable[[F], F]:
    """Signed in with one of ``roles`` (admin implied); POSTs carry the session's CSRF token.
    Not signed in: a GET goes to the sign-in page, anything else is 401."""
    allowed = {*roles, Role.ADMIN}

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            found = session_of(gateway().db, request.cookies.get(COOKIE))
            if found is None:
                if request.method == "GET":
                    target = quote(request.full_path.rstrip("?"), safe="/?=&")
                    return redirect(f"/workbench/signin?next={target}", code=303)
                return refusal(401, "Sign in first: your session has ended.")
            if found.principal.role not in allowed:
                return refusal(403, f"The role {found.principal.role.value} may not do this.")
            if request.method != "GET" and not same(request.form.get("csrf"), found.csrf):
                return refusal(403, "This form has expired. Reload the page and try again.")
            g.workbench = found
            return view(*args, **kwargs)

        wrapper.required_roles = frozenset(roles)  # type: ignore[attr-defined]  # checked by tests
        return wrapper  # type: ignore[return-value]

    return decorate


def current() -> Session:
    return g.workbench  # type: ignore[no-any-return]


def who() -> Principal:
    return current().principal


def saver() -> str:
    """Who saved a profile version: the token, never a person's name (a sign-off names one)."""
    return f"token {who().token_id} ({who().role.value})"


def sees_originals() -> bool:
    """Only the privacy officer sees original values (an admin runs the gateway, and sees the
    de-identified side only)."""
    return who().role is Role.PRIVACY_OFFICER


def render(template: str, status: int = 200, **context: Any) -> Response:
    session = getattr(g, "workbench", None)
    body = render_template(template, session=session, **context)
    return Response(body, status=status, mimetype="text/html")


def refusal(status: int, message: str) -> Response:
    return render("refusal.html", status=status, message=message, title="Not allowed")


@blueprint.get("/static/<path:name>")
def static(name: str) -> Response:
    """The vendored stylesheet and script (open: the sign-in page needs them)."""
    return send_from_directory(STATIC, name, max_age=3600)
