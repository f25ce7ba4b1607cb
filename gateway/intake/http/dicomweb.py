"""DICOMweb STOW-RS intake (PS3.18 10.5): store instances, answer with the standard response.

An instance is *accepted* once spooled and recorded (it is then forwarded clean or
quarantined, never lost); parts that are not DICOM are refused in FailedSOPSequence.
"""

from __future__ import annotations

import io
from typing import Any

import pydicom
from flask import Blueprint, Response, jsonify, request

from gateway.errors import ReasonCode
from gateway.intake.http.auth import principal, require
from gateway.intake.http.context import gateway
from gateway.intake.http.errors import ApiError
from gateway.intake.http.multipart import parse_related
from gateway.persistence.models import Kind
from gateway.persistence.tokens import Role

blueprint = Blueprint("dicomweb", __name__)

CANNOT_UNDERSTAND = 0xC000  # PS3.18 Table 10.5.3-1 / PS3.4 failure reasons
SOP_CLASS_NOT_SUPPORTED = 0x0122
PROCESSING_FAILURE = 0x0110


def _uids(payload: bytes) -> tuple[str, str] | None:
    try:
        ds = pydicom.dcmread(io.BytesIO(payload), stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except Exception:  # noqa: BLE001 - a part pydicom cannot read is refused as not DICOM
        return None
    sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or "")
    sop_instance = str(ds.get("SOPInstanceUID", "") or getattr(ds.file_meta, "MediaStorageSOPInstanceUID", "") or "")
    if not sop_instance:
        return None
    return sop_class, sop_instance


def _ref(sop_class: str, sop_instance: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [sop_class]} if sop_class else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [sop_instance]} if sop_instance else {"vr": "UI"},
    }
    for tag, value in extra.items():
        item[tag] = value
    return item


def _failed(status: int, reason: ReasonCode) -> dict[str, Any]:
    """A FailedSOPSequence item: the PS3.18 failure reason, and the gateway's reason code in
    ErrorComment (the same code a directory run gives the same bytes)."""
    return _ref("", "", **{
        "00081197": {"vr": "US", "Value": [status]},
        "00000902": {"vr": "LO", "Value": [reason.value]},
    })


@blueprint.post("/dicomweb/studies")
@blueprint.post("/dicomweb/studies/<study>")
@blueprint.post("/d/<destination>/dicomweb/studies")
@blueprint.post("/d/<destination>/dicomweb/studies/<study>")
@require(Role.SENDER)
def stow(destination: str = "default", study: str | None = None) -> Response:
    gw = gateway()
    if destination not in gw.destinations:
        raise ApiError(404, ReasonCode.UNKNOWN_DESTINATION, "no such destination")
    if request.content_length and request.content_length > gw.config.limits.max_request_bytes:
        raise ApiError(413, ReasonCode.TOO_LARGE, "request exceeds limits.max_request_bytes")
    root_type, parts = parse_related(request.headers.get("Content-Type", ""), request.get_data())
    if root_type and root_type != "application/dicom":
        raise ApiError(415, ReasonCode.UNSUPPORTED_MEDIA_TYPE, "only type=\"application/dicom\" is accepted")
    accepted: list[tuple[bytes, str, str]] = []
    failed: list[dict[str, Any]] = []
    for part in parts:
        if part.content_type != "application/dicom":
            failed.append(_failed(SOP_CLASS_NOT_SUPPORTED, ReasonCode.UNSUPPORTED_INPUT))
            continue
        uids = _uids(part.body)
        if uids is None or part.body[128:132] != b"DICM":
            failed.append(_failed(CANNOT_UNDERSTAND, ReasonCode.NOT_DICOM))
            continue
        accepted.append((part.body, *uids))
    receipt = None
    if accepted:
        receipt = gw.jobs.accept(destination, Kind.DICOM, "stow-rs", [a[0] for a in accepted],
                                 principal().token_id)
    body: dict[str, Any] = {}
    if accepted:
        body["00081199"] = {"vr": "SQ", "Value": [_ref(c, i) for _, c, i in accepted]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if receipt is not None:
        body["00081190"] = {"vr": "UR", "Value": [f"{request.host_url}jobs/{receipt.job_id}"]}
    status = 200 if not failed else (202 if accepted else 409)
    if not parts:
        raise ApiError(400, ReasonCode.EMPTY_REQUEST, "no DICOM parts in the request")
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/dicom+json"
    if receipt is not None:
        response.headers["Content-Location"] = f"/jobs/{receipt.job_id}"
        response.headers["X-Job-Id"] = receipt.job_id
    return response
