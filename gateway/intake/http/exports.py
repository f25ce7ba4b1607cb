"""Cohort exports from the service: ``POST /exports`` (the cohort file as the body) starts or
resumes one, ``GET /exports/{id}`` shows its progress and, once done, its cohort report
(counts, row numbers and reason codes: no PHI). Privacy officers only: a cohort names
patients."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.errors import ConfigurationError, ReasonCode
from gateway.intake.http.auth import principal, require
from gateway.intake.http.context import gateway
from gateway.intake.http.errors import ApiError
from gateway.intake.pull.background import BackgroundExports
from gateway.intake.pull.cohort import parse_cohort
from gateway.intake.pull.export import ExportRequest, parse_date, parse_modalities
from gateway.intake.pull.pacs import StudyFilter
from gateway.intake.pull.report import export_report
from gateway.persistence.tokens import Role

blueprint = Blueprint("exports", __name__)

EXTENSION = "deid_gateway.exports"
COHORT_TYPES = ("text/csv", "application/fhir+json", "application/json")


def exports() -> BackgroundExports:
    """The app's exports (created on first use: the factory starts no thread)."""
    found = current_app.extensions.get(EXTENSION)
    if found is None:
        found = current_app.extensions.setdefault(EXTENSION, BackgroundExports(gateway()))
    assert isinstance(found, BackgroundExports)
    return found


@blueprint.post("/exports")
@require(Role.PRIVACY_OFFICER)
def start() -> Response:
    """Query: ``destination`` (default), ``since``, ``until`` (YYYY-MM-DD), ``modalities``
    (CT,MR). The same body and query again resumes the same export (same id)."""
    gw = gateway()
    media = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media not in COHORT_TYPES:
        raise ApiError(415, ReasonCode.UNSUPPORTED_MEDIA_TYPE,
                       "the cohort file: text/csv, or a FHIR Group as application/fhir+json")  # fmt: skip
    if request.content_length and request.content_length > gw.config.limits.max_fhir_bytes:
        raise ApiError(413, ReasonCode.TOO_LARGE, "request exceeds limits.max_fhir_bytes")
    destination = request.args.get("destination", "default")
    if destination not in gw.destinations:
        raise ApiError(404, ReasonCode.UNKNOWN_DESTINATION, "no such destination")
    if gw.config.sources.pacs is None and gw.config.sources.ehr is None:
        raise ApiError(409, ReasonCode.CONFIGURATION_INVALID,
                       "the service has no sources (sources.pacs, sources.ehr) to export from")  # fmt: skip
    cohort = parse_cohort(request.get_data(), "body")
    filters = StudyFilter(
        parse_date(request.args.get("since"), "since"),
        parse_date(request.args.get("until"), "until"),
        parse_modalities(request.args.get("modalities")),
    )
    export = ExportRequest(destination, cohort, filters, started_by=principal().token_id)
    try:
        export_id = exports().start(export)
    except ConfigurationError as exc:
        raise ApiError(409, exc.reason, exc.detail) from None
    response = jsonify(export_report(gw.db, export_id))
    response.status_code = 202
    response.headers["Location"] = f"/exports/{export_id}"
    return response


@blueprint.get("/exports/<export_id>")
@require(Role.PRIVACY_OFFICER)
def status(export_id: str) -> Response:
    report = export_report(gateway().db, export_id)
    if report is None:
        raise ApiError(404, ReasonCode.UNKNOWN_EXPORT, "no such export")
    report["running"] = exports().running(export_id)
    return jsonify(report)
