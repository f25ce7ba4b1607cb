"""One error mapping for the whole service: typed errors -> 4xx with a precise, value-free
reason; anything else -> 500 with no stack trace. FHIR paths answer with OperationOutcome."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from gateway.errors import DeidError, ReasonCode, RequestRefused

log = logging.getLogger("deid_gateway.http")

ApiError = RequestRefused  # the HTTP intakes' name for a refused request: one vocabulary


FHIR_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    503: "transient",
}


def operation_outcome(status: int, code: str, detail: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error" if status >= 400 else "information",
                "code": FHIR_ISSUE_CODES.get(status, "exception"),
                "details": {"text": code},
                "diagnostics": detail,
            }
        ],
    }


def error_response(status: int, code: str, detail: str) -> Response:
    if (
        request.path.startswith("/fhir")
        or "/fhir" in request.path
        or request.path.endswith("/fhir")
    ):
        response = jsonify(operation_outcome(status, code, detail))
        response.mimetype = "application/fhir+json"
    else:
        response = jsonify({"error": code, "detail": detail})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DeidError)
    def _deid(exc: DeidError) -> Response:
        response = error_response(exc.http_status, exc.reason.value, exc.detail)
        retry_after = getattr(exc, "retry_after_seconds", None)
        if exc.http_status == 503 and retry_after:  # RFC 9110 10.2.3: when to try again
            response.headers["Retry-After"] = str(int(retry_after))
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return error_response(
            exc.code or 500, (exc.name or "error").lower().replace(" ", "-"), exc.description or ""
        )

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        # a body nested deeper than any record (JSON, DICOM sequences): the request, not the
        # gateway, is at fault, on every route
        return error_response(
            422, ReasonCode.UNSUPPORTED_INPUT.value, "the payload is nested too deeply"
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.path)
        return error_response(500, "internal-error", "the gateway failed; nothing was forwarded")
