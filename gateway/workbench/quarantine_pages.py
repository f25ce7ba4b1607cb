"""Quarantine review: counts by reason and destination, the items, one item's reason and its
de-identified preview (never the original), release (reprocess) and discard with a reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from flask import Response, redirect, request

from gateway.errors import DeidError
from gateway.persistence.tokens import Role
from gateway.pipeline.preview import deidentified_header, preview_dicom, preview_fhir
from gateway.pipeline.review import Actor
from gateway.workbench.preview_pages import data_uri
from gateway.workbench.web import blueprint, gateway, page, refusal, render, who

OFFICER = Role.PRIVACY_OFFICER


def _actor() -> Actor:
    return Actor(who().token_id, who().role.value)


@blueprint.get("/quarantine")
@page(OFFICER)
def quarantine() -> Response:
    items = gateway().review.listing()
    counts = Counter((i["reason"] or "", i["destination"]) for i in items)
    reason, destination = request.args.get("reason"), request.args.get("destination")
    shown = [
        i
        for i in items
        if (not reason or i["reason"] == reason)
        and (not destination or i["destination"] == destination)
    ]
    return render(
        "quarantine.html",
        counts=sorted(counts.items()),
        items=shown,
        reason=reason or "",
        destination=destination or "",
        title="Quarantine",
    )


def _item_preview(item: dict[str, Any], path: Path | None) -> Any:
    """The item run again through the runner with nothing stored, de-identified side only;
    when it still cannot be made safe, its header as the profile leaves it (no image)."""
    destination = gateway().destinations.get(item["destination"])
    if path is None or destination is None:
        return None
    data = path.read_bytes()
    run = preview_dicom if item["kind"] == "dicom" else preview_fhir
    result = run(destination, data, False)
    if not result.outcome.delivered and item["kind"] == "dicom":
        result.rows = deidentified_header(destination, data)
    return result


@blueprint.get("/quarantine/<item_id>")
@page(OFFICER)
def quarantine_item(item_id: str) -> Response:
    gw = gateway()
    try:
        item, path = gw.review.located(item_id)
    except DeidError as exc:
        return refusal(404, exc.detail)
    result = _item_preview(item, path)
    gw.review.audit(
        "quarantine:inspect",
        _actor(),
        job_id=item["job"],
        item_id=item_id,
        destination=item["destination"],
    )
    return render(
        "quarantine_item.html",
        item=item,
        preview=result,
        data_uri=data_uri,
        title="Quarantined item",
    )


def _decide(item_id: str, action: str) -> Response:
    note = request.form.get("note", "").strip()
    if not note:
        return refusal(400, f"Say why you {action} this item.")
    review = gateway().review
    decide = {"release": review.release, "discard": review.discard}[action]
    try:
        decide(item_id, _actor(), note)
    except DeidError as exc:
        return refusal(exc.http_status if exc.http_status < 500 else 409, exc.detail)
    return redirect(f"/workbench/quarantine?done={action}", code=303)  # type: ignore[return-value]


@blueprint.post("/quarantine/<item_id>/release")
@page(OFFICER)
def release(item_id: str) -> Response:
    return _decide(item_id, "release")


@blueprint.post("/quarantine/<item_id>/discard")
@page(OFFICER)
def discard(item_id: str) -> Response:
    return _decide(item_id, "discard")
