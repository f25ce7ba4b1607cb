"""Profile pages: the list per destination (signed or not), one profile in plain language, the
editor (the compiler's problems at their lines), history, the diff of any two, sign-off.

The workbench keeps versions in the database; the service runs the file its configuration
names. A saved version is installed by replacing that file with it (``Download``): its hash,
and so its sign-off, is the same wherever the text lives.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Response, abort, jsonify, redirect, request

from gateway.errors import ConfigurationError
from gateway.persistence.profiles import get_version, save_version, sign_off
from gateway.persistence.tokens import Role
from gateway.profiles.diff import diff_profiles
from gateway.profiles.loader import read_profile
from gateway.workbench import catalogue
from gateway.workbench.catalogue import DestinationProfile
from gateway.workbench.web import blueprint, gateway, page, refusal, render, saver

OFFICER = Role.PRIVACY_OFFICER


def _destination(name: str, readable: bool = False) -> DestinationProfile:
    """The destination's profile; a 404 page (raised) when there is none, or, with
    ``readable``, when its profile file cannot be read."""
    gw = gateway()
    found = next(
        (d for d in catalogue.destination_profiles(gw.config, gw.db) if d.destination == name),
        None,
    )
    if found is None or (readable and not found.file):
        abort(refusal(404, "There is no such destination, or its profile cannot be read."))
    return found


@blueprint.get("/profiles")
@page(OFFICER)
def profiles() -> Response:
    gw = gateway()
    rows = catalogue.destination_profiles(gw.config, gw.db)
    return render("profiles.html", rows=rows, shipped=catalogue.shipped(), title="Profiles")


@blueprint.get("/profiles/<destination>")
@page(OFFICER)
def profile(destination: str) -> Response:
    found = _destination(destination)
    groups = []
    if not found.error:
        text, file = read_profile(gateway().config.destinations[destination].profile)
        compiled = catalogue.compile_draft(text, file).compiled
        groups = catalogue.plain_language(compiled) if compiled else []
    return render("profile.html", profile=found, groups=groups, title=f"Profile of {destination}")


@blueprint.route("/profiles/<destination>/edit", methods=["GET", "POST"])
@page(OFFICER)
def edit(destination: str) -> Response:
    found = _destination(destination, readable=True)
    if request.method == "GET":
        base = request.args.get("from")
        record = get_version(gateway().db, base) if base else None
        text = record.text if record else read_profile(found.file)[0]
        draft = catalogue.compile_draft(text, found.file)
        return render("edit.html", profile=found, draft=draft, saved=None, title="Edit profile")
    draft = catalogue.compile_draft(request.form.get("text", "").replace("\r\n", "\n"), found.file)
    saved = None
    if request.form.get("action") == "save" and draft.compiled is not None:
        record = catalogue.record_of(draft)
        save_version(gateway().db, record, saver())
        saved = record.content_hash
    status = 422 if draft.problems else 200
    return render(
        "edit.html", status=status, profile=found, draft=draft, saved=saved, title="Edit profile"
    )


@blueprint.post("/profiles/<destination>/check")
@page(OFFICER)
def check(destination: str) -> Response:
    """The compiler's problems of a text being typed (the editor's script asks as you type):
    JSON, nothing stored."""
    found = _destination(destination, readable=True)
    draft = catalogue.compile_draft(request.form.get("text", "").replace("\r\n", "\n"), found.file)
    return jsonify(
        {
            "hash": draft.compiled.profile.content_hash if draft.compiled else None,
            "problems": [
                {
                    "line": p.line if p.file == draft.file else None,
                    "file": p.file,
                    "where": p.where,
                    "message": p.message,
                }
                for p in draft.problems
            ],
        }
    )


@blueprint.get("/profiles/<destination>/versions")
@page(OFFICER)
def versions(destination: str) -> Response:
    found = _destination(destination)
    stored = catalogue.versions_of(gateway().db, found)
    return render(
        "versions.html",
        profile=found,
        versions=stored,
        shipped=catalogue.shipped(),
        message=request.args.get("message", ""),
        title=f"History of {destination}'s profile",
    )


@blueprint.get("/versions/<content_hash>.yaml")
@page(OFFICER)
def download(content_hash: str) -> Response:
    record = get_version(gateway().db, content_hash)
    if record is None:
        return refusal(404, "There is no such version.")
    response = Response(record.text, mimetype="application/yaml")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{record.name}-{content_hash}.yaml"'
    )
    return response


@blueprint.get("/diff")
@page(OFFICER)
def diff() -> Response:
    gw = gateway()
    old_ref, new_ref = request.args.get("old", ""), request.args.get("new", "")
    try:
        old_label, old = catalogue.resolve(gw.db, gw.config, old_ref)
        new_label, new = catalogue.resolve(gw.db, gw.config, new_ref)
    except ConfigurationError as exc:
        return refusal(400, exc.detail)
    rows = diff_profiles(old, new)
    return render(
        "diff.html",
        rows=rows,
        old=(old_label, old.profile),
        new=(new_label, new.profile),
        back=request.args.get("destination", ""),
        title="Compare profiles",
    )


@blueprint.post("/profiles/<destination>/signoff")
@page(OFFICER)
def signoff(destination: str) -> Response:
    found = _destination(destination)
    by = request.form.get("by", "").strip()
    statement = request.form.get("statement", "").strip()
    content_hash = request.form.get("version", "").strip()
    record = get_version(gateway().db, content_hash) if content_hash else None
    if content_hash == found.content_hash and record is None:  # the file itself, not saved yet
        text, file = read_profile(found.file)
        draft = catalogue.compile_draft(text, file)
        record = catalogue.record_of(draft) if draft.compiled else None
    if record is None:
        return refusal(404, "There is no such version to sign.")
    if not by or not statement:
        return refusal(400, "A sign-off needs your name and a statement.")
    sign_off(gateway().db, record, by, statement)
    message = f"Signed off #{record.content_hash} by {by}." + (
        ""
        if record.content_hash == found.content_hash
        else " The destination runs its file: install this version there to run it."
    )
    return redirect(  # type: ignore[return-value]
        f"/workbench/profiles/{destination}/versions?" + urlencode({"message": message}), code=303
    )
