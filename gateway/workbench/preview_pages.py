"""Preview: upload a DICOM instance or a FHIR resource or Bundle and see what a destination's
profile makes of it, run by the one runner with a store that keeps nothing. The original side
is shown to the privacy officer only."""

from __future__ import annotations

import base64

from flask import Response, request

from gateway.persistence.tokens import Role
from gateway.pipeline.preview import Preview, preview_dicom, preview_fhir
from gateway.workbench.web import blueprint, gateway, page, refusal, render, sees_originals

OFFICER = Role.PRIVACY_OFFICER
RECENT_QUARANTINE = 10  # quarantined items offered for a preview on the form


def data_uri(png: bytes | None) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode() if png else ""


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


@blueprint.get("/preview")
@page(OFFICER)
def preview_form() -> Response:
    recent = gateway().review.listing()[-RECENT_QUARANTINE:][::-1]  # newest first
    return render(
        "preview_form.html",
        destinations=list(gateway().destinations),
        recent=recent,
        title="Preview",
    )


@blueprint.post("/preview")
@page(OFFICER)
def preview() -> Response:
    gw = gateway()
    name = request.form.get("destination", "default")
    if name not in gw.destinations:
        return refusal(404, "There is no such destination.")
    upload = request.files.get("file")
    data = upload.read() if upload else b""
    if not data:
        return refusal(400, "Choose a DICOM file or a FHIR JSON file to preview.")
    destination = gw.destinations[name]
    if is_dicom(data):
        result: Preview = preview_dicom(destination, data, sees_originals())
    elif data.lstrip()[:1] == b"{":  # the runner parses it as every FHIR door does
        result = preview_fhir(destination, data, sees_originals())
    else:
        return refusal(400, "That file is neither DICOM Part 10 nor FHIR JSON.")
    return render(
        "preview.html",
        preview=result,
        destination=name,
        filename=upload.filename if upload else "",
        data_uri=data_uri,
        title="Preview",
    )
