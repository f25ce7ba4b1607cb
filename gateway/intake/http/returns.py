"""The way back: a research partner returns results (DICOM SEG/SR/GSPS/KOS/SC by STOW-RS,
FHIR Observation/DiagnosticReport/ImagingStudy/Task) for its own destination only. The doors
are the outbound doors' (same parsing, spooling, back-pressure and answers); the job engine
runs the items through ``gateway.broker.returns`` instead of the de-identification runner."""

from __future__ import annotations

from flask import Blueprint, Response

from gateway.errors import ReasonCode
from gateway.intake.http.auth import principal, require
from gateway.intake.http.context import gateway
from gateway.intake.http.dicomweb import stow_into
from gateway.intake.http.errors import ApiError
from gateway.intake.http.fhir import base_into
from gateway.persistence.tokens import Role

blueprint = Blueprint("returns", __name__)


def _door(destination: str, kind: str) -> None:
    """A partner token returns to its own destination only; the destination must take
    returned results of this kind."""
    who = principal()
    if who.role is not Role.ADMIN and who.destination != destination:
        raise ApiError(403, ReasonCode.FORBIDDEN, "this token returns to another destination")
    gw = gateway()
    runner = gw.jobs.return_runners.get(destination)
    if destination not in gw.destinations or runner is None:
        raise ApiError(
            404, ReasonCode.UNKNOWN_DESTINATION, "no such destination takes returned results"
        )
    store = runner.dicom_store if kind == "dicom" else runner.fhir_store
    if store is None:
        raise ApiError(
            404, ReasonCode.UNKNOWN_DESTINATION, f"the destination has no clinical {kind} store"
        )


@blueprint.post("/d/<destination>/return/dicomweb/studies")
@require(Role.PARTNER)
def return_stow(destination: str) -> Response:
    _door(destination, "dicom")
    return stow_into(destination, None, "return-stow-rs")


@blueprint.post("/d/<destination>/return/fhir")
@require(Role.PARTNER)
def return_fhir(destination: str) -> Response:
    _door(destination, "fhir")
    return base_into(destination, "return-")
