"""Identity: registers (DICOM issuers, FHIR MR systems) that no namespace declares, and the
identity conflicts, with counts; declaring a register in a namespace makes a new profile
version, which the officer then signs like any other."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Response, redirect, request
from sqlalchemy import func, select

from gateway.errors import ConfigurationError
from gateway.persistence.models import IdentityConflict
from gateway.persistence.profiles import save_version
from gateway.persistence.tokens import Role
from gateway.profiles.loader import read_profile
from gateway.workbench import catalogue
from gateway.workbench.web import blueprint, gateway, page, refusal, render, saver

OFFICER = Role.PRIVACY_OFFICER


def conflicts() -> list[tuple[str, int]]:
    """(destination, open conflicts): counts only, the rows hold keyed hashes."""
    with gateway().db.session() as session:
        rows = session.execute(
            select(IdentityConflict.destination, func.count())
            .where(IdentityConflict.resolved.is_(False))
            .group_by(IdentityConflict.destination)
            .order_by(IdentityConflict.destination)
        ).all()
    return [(str(d), int(n)) for d, n in rows]


@blueprint.get("/identity")
@page(OFFICER)
def identity() -> Response:
    gw = gateway()
    registers = sorted(gw.jobs.undeclared_registers().items())
    namespaces = {
        name: [n.name for n in d.profile.linkage.identity.namespaces]
        for name, d in gw.destinations.items()
    }
    return render(
        "identity.html",
        registers=registers,
        conflicts=conflicts(),
        namespaces=namespaces,
        title="Identity",
    )


@blueprint.post("/identity/mapping")
@page(OFFICER)
def mapping() -> Response:
    gw = gateway()
    destination = request.form.get("destination", "")
    register = request.form.get("register", "").strip()
    namespace = request.form.get("namespace", "").strip()
    if destination not in gw.config.destinations:
        return refusal(404, "There is no such destination.")
    if not register or not namespace:
        return refusal(400, "Name the register and the namespace to declare it in.")
    text, file = read_profile(gw.config.destinations[destination].profile)
    current = catalogue.compile_draft(text, file)
    if current.compiled is None:
        return refusal(409, "The destination's profile does not compile; fix it first.")
    try:
        new_text = catalogue.with_namespace(text, current.compiled, namespace, register)
    except ConfigurationError as exc:
        return refusal(400, exc.detail)
    draft = catalogue.compile_draft(new_text, file)
    if draft.compiled is None:
        return refusal(400, "; ".join(str(p) for p in draft.problems))
    record = catalogue.record_of(draft)
    save_version(gw.db, record, saver())
    message = f"New version #{record.content_hash} declares {register} in {namespace}: sign it."
    return redirect(  # type: ignore[return-value]
        f"/workbench/profiles/{destination}/versions?" + urlencode({"message": message}),
        code=303,
    )
