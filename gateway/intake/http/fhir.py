"""FHIR REST intake: transaction/batch Bundles at the base, create/update by type, NDJSON.

Accepted payloads are queued (202 with Content-Location of the job); malformed ones get an
OperationOutcome with a precise, value-free reason.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from gateway.errors import DeidError, ReasonCode
from gateway.fhir.sniff import parse_fhir_json
from gateway.intake.http.auth import principal, require
from gateway.intake.http.context import gateway
from gateway.intake.http.errors import ApiError, operation_outcome
from gateway.persistence.models import Kind
from gateway.persistence.tokens import Role

blueprint = Blueprint("fhir", __name__)

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
NDJSON_TYPES = ("application/fhir+ndjson", "application/x-ndjson", "application/ndjson")
BUNDLE_TYPES = ("transaction", "batch", "collection", "searchset", "document", "message")


def _media() -> str:
    return (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def _parse_json(data: bytes, where: str) -> dict[str, Any]:
    """Parsed as the runner parses (``parse_fhir_json``): the same bytes get the same reason
    code here as in a directory run."""
    try:
        return parse_fhir_json(data)
    except DeidError as exc:
        raise ApiError(400, exc.reason, f"{where}: {exc.detail}") from None


def _destination(destination: str) -> None:
    gw = gateway()
    if destination not in gw.destinations:
        raise ApiError(404, ReasonCode.UNKNOWN_DESTINATION, "no such destination")
    if request.content_length and request.content_length > gw.config.limits.max_fhir_bytes:
        raise ApiError(413, ReasonCode.TOO_LARGE, "request exceeds limits.max_fhir_bytes")


def _accepted(destination: str, payloads: list[bytes], channel: str) -> Response:
    receipt = gateway().jobs.accept(destination, Kind.FHIR, channel, payloads, principal().token_id)
    outcome = operation_outcome(
        202, "accepted", f"{len(payloads)} payload(s) accepted as job {receipt.job_id}"
    )
    outcome["issue"][0]["severity"] = "information"
    outcome["issue"][0]["code"] = "informational"
    response = jsonify(outcome)
    response.status_code = 202
    response.mimetype = "application/fhir+json"
    response.headers["Content-Location"] = f"/jobs/{receipt.job_id}"
    response.headers["X-Job-Id"] = receipt.job_id
    return response


@blueprint.post("/fhir")
@blueprint.post("/d/<destination>/fhir")
@require(Role.SENDER)
def base(destination: str = "default") -> Response:
    return base_into(destination, "")


def base_into(destination: str, channel_prefix: str) -> Response:
    """The FHIR base door (Bundle or NDJSON); ``channel_prefix`` ``return-`` for results a
    partner returns (gateway.intake.http.returns)."""
    _destination(destination)
    media = _media()
    data = request.get_data()
    if media in NDJSON_TYPES:
        lines = []
        for number, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                _parse_json(line, f"line {number}")
                lines.append(line)
        if not lines:
            raise ApiError(400, ReasonCode.EMPTY_REQUEST, "no resources in the NDJSON body")
        return _accepted(destination, lines, channel_prefix + "fhir-ndjson")
    if media not in JSON_TYPES:
        raise ApiError(
            415,
            ReasonCode.UNSUPPORTED_MEDIA_TYPE,
            "use application/fhir+json or application/fhir+ndjson",
        )
    obj = _parse_json(data, "body")
    if channel_prefix and obj["resourceType"] != "Bundle":  # a returned result: one resource
        return _accepted(destination, [data], channel_prefix + "fhir-rest")
    if obj["resourceType"] != "Bundle":
        raise ApiError(
            400,
            ReasonCode.NOT_A_BUNDLE,
            "POST to the base takes a Bundle; POST a resource to [base]/{type}",
        )
    if obj.get("type") not in BUNDLE_TYPES:
        raise ApiError(
            400, ReasonCode.BAD_BUNDLE_TYPE, f"Bundle.type must be one of {', '.join(BUNDLE_TYPES)}"
        )
    return _accepted(destination, [data], channel_prefix + "fhir-bundle")


@blueprint.post("/fhir/<resource_type>")
@blueprint.put("/fhir/<resource_type>/<resource_id>")
@blueprint.post("/d/<destination>/fhir/<resource_type>")
@blueprint.put("/d/<destination>/fhir/<resource_type>/<resource_id>")
@require(Role.SENDER)
def by_type(
    resource_type: str, resource_id: str | None = None, destination: str = "default"
) -> Response:
    _destination(destination)
    if _media() not in JSON_TYPES:
        raise ApiError(415, ReasonCode.UNSUPPORTED_MEDIA_TYPE, "use application/fhir+json")
    obj = _parse_json(request.get_data(), "body")
    if obj["resourceType"] != resource_type:
        raise ApiError(400, ReasonCode.TYPE_MISMATCH, "resourceType does not match the URL")
    if resource_id is not None and obj.get("id") != resource_id:
        raise ApiError(400, ReasonCode.ID_MISMATCH, "resource id does not match the URL")
    return _accepted(destination, [json.dumps(obj).encode()], "fhir-rest")
