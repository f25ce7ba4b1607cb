"""The honest broker's doors: look up one pseudonym, export the mapping tables. Only the
honest-broker role (not even admin: separation of duties), always with a stated reason,
always audited (``gateway.broker.service``)."""

from __future__ import annotations

import io
import zipfile

from flask import Blueprint, Response, jsonify, request

from gateway.broker.service import Caller, HonestBroker
from gateway.errors import ReasonCode
from gateway.intake.http.auth import principal, require
from gateway.intake.http.context import gateway
from gateway.intake.http.errors import ApiError
from gateway.persistence.tokens import Role

blueprint = Blueprint("broker", __name__)


def _broker() -> HonestBroker:
    gw = gateway()
    if gw.vault is None:
        raise ApiError(409, ReasonCode.VAULT_OFF, "no destination keeps a vault")
    return HonestBroker(gw.db, gw.vault)


def _caller() -> Caller:
    who = principal()
    return Caller(who.token_id, who.role.value)


def _body() -> dict[str, object]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, ReasonCode.USAGE, 'the body must be JSON {"value": ..., "reason": ...}')
    return body


@blueprint.post("/broker/lookup")
@require(Role.HONEST_BROKER, admin=False)
def lookup() -> Response:
    """``{"value": pseudonym, "reason": text}`` -> ``{"kind", "original", "destination"}``."""
    body = _body()
    answer = _broker().lookup(body.get("value"), body.get("reason"), _caller())
    response = jsonify(answer.to_json())
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("/broker/export")
@require(Role.HONEST_BROKER, admin=False)
def export() -> Response:
    """``{"reason": text, "destination": optional}`` -> a zip of ``uid_mapping.csv`` and
    ``patid_mapping.csv`` (columns id_old,id_new)."""
    body = _body()
    destination = body.get("destination")
    if destination is not None and not isinstance(destination, str):
        raise ApiError(400, ReasonCode.USAGE, "destination must be a name")
    tables = _broker().export(body.get("reason"), _caller(), destination)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in tables.items():
            archive.writestr(name, text)
    response = Response(buffer.getvalue(), mimetype="application/zip")
    response.headers["Content-Disposition"] = 'attachment; filename="mappings.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response
