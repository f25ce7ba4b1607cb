"""Preview without forwarding: the de-identified object, for privacy officers and ad-hoc use."""

from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify, request

from gateway.dicom import tags as T
from gateway.dicom.reader import read_dicom
from gateway.dicom.writer import encode_part10
from gateway.errors import DeidError, ReasonCode
from gateway.fhir.bundle import deidentify_fhir
from gateway.fhir.sniff import parse_fhir_json
from gateway.intake.http.auth import require
from gateway.intake.http.context import gateway
from gateway.intake.http.errors import ApiError
from gateway.persistence.tokens import Role

blueprint = Blueprint("preview", __name__)


def _destination() -> str:
    name = request.args.get("destination", "default")
    if name not in gateway().destinations:
        raise ApiError(404, ReasonCode.UNKNOWN_DESTINATION, "no such destination")
    return name


@blueprint.post("/deidentify/dicom")
@require(Role.SENDER, Role.PRIVACY_OFFICER)
def dicom() -> Response:
    dest = gateway().destinations[_destination()]
    data = request.get_data()
    if len(data) > gateway().config.limits.max_request_bytes:
        raise ApiError(413, ReasonCode.TOO_LARGE, "request exceeds limits.max_request_bytes")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise ApiError(
            400, ReasonCode.NOT_DICOM, "the body must be a DICOM Part 10 file (application/dicom)"
        )
    import tempfile
    from pathlib import Path

    wants_json = "application/dicom+json" in (request.headers.get("Accept") or "")
    with tempfile.NamedTemporaryFile(suffix=".dcm") as tmp:  # large values are read from it
        tmp.write(data)
        tmp.flush()
        done = dest.dicom.process(read_dicom(Path(tmp.name)))
        if wants_json:
            for tag in T.PIXEL_DATA_TAGS:
                done.dataset.pop(tag, None)
            return Response(
                json.dumps(done.dataset.to_json_dict()), mimetype="application/dicom+json"
            )
        return Response(encode_part10(done.dataset), mimetype="application/dicom")


@blueprint.post("/deidentify/fhir")
@require(Role.SENDER, Role.PRIVACY_OFFICER)
def fhir() -> Response:
    dest = gateway().destinations[_destination()]
    try:  # parsed as every other door parses: the same bytes, the same reason
        obj = parse_fhir_json(request.get_data())
    except DeidError as exc:
        raise ApiError(400, exc.reason, f"body: {exc.detail}") from None
    result = deidentify_fhir(obj, dest.profile, dest.linkage)
    response = jsonify(result)
    response.mimetype = "application/fhir+json"
    return response
