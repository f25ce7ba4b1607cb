"""DICOMweb STOW-RS intake (PS3.18 10.5): store instances, answer with the standard response.

An instance is *accepted* once spooled and recorded (it is then forwarded clean or
quarantined, never lost); parts that are not DICOM are refused in FailedSOPSequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from flask import Blueprint, Response, jsonify, request

from gateway.errors import IntakeUnavailable, ReasonCode
from gateway.intake.http.auth import principal, require
from gateway.intake.http.context import gateway
from gateway.intake.http.errors import ApiError
from gateway.intake.http.multipart import Part, parse_related
from gateway.persistence.models import Kind
from gateway.persistence.tokens import Role

blueprint = Blueprint("dicomweb", __name__)

CANNOT_UNDERSTAND = 0xC000  # PS3.18 Table 10.5.3-1 / PS3.4 failure reasons
SOP_CLASS_NOT_SUPPORTED = 0x0122
PROCESSING_FAILURE = 0x0110
DATA_SET_DOES_NOT_MATCH = 0xA900  # an instance of another study than the URL names
OUT_OF_RESOURCES = 0xA700  # PS3.4 C.4.2.1.4: back-pressure, a full spool: try again later
IN_MEMORY_BYTES = 4 * 1024 * 1024  # a part up to this size is parsed from memory


@dataclass(frozen=True)
class _Uids:
    sop_class: str
    sop_instance: str
    study: str


def _uids(part: Part) -> _Uids | None:
    """The UIDs the response names, read from the part's header (None: not Part 10 DICOM).

    A part up to ``IN_MEMORY_BYTES`` is parsed from memory: from a file, pydicom asks the
    position at every element, a system call that hands the GIL to another request thread
    (four threads made the door's parse cost 4x the CPU). A larger part is read from its
    file, header only, large values deferred: memory stays small whatever its size."""
    in_memory = part.size <= IN_MEMORY_BYTES
    data = part.body if in_memory else part.head(132)
    if data[128:132] != b"DICM":
        return None
    source: Path | BytesIO = BytesIO(data) if in_memory else part.path
    try:
        ds = pydicom.dcmread(
            source,
            stop_before_pixels=True,
            defer_size=1024,
            specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"],
        )
    except Exception:  # noqa: BLE001 - a part pydicom cannot read is refused as not DICOM
        return None
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", "") or "")
    sop_instance = str(
        ds.get("SOPInstanceUID", "") or getattr(meta, "MediaStorageSOPInstanceUID", "") or ""
    )
    if not sop_instance:
        return None
    return _Uids(sop_class, sop_instance, str(ds.get("StudyInstanceUID", "") or ""))


def _ref(sop_class: str, sop_instance: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [sop_class]} if sop_class else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [sop_instance]} if sop_instance else {"vr": "UI"},
    }
    for tag, value in extra.items():
        item[tag] = value
    return item


def _failed(status: int, reason: ReasonCode, uids: _Uids | None = None) -> dict[str, Any]:
    """A FailedSOPSequence item: the PS3.18 failure reason, and the gateway's reason code in
    ErrorComment (the same code a directory run gives the same bytes)."""
    return _ref(
        uids.sop_class if uids else "",
        uids.sop_instance if uids else "",
        **{
            "00081197": {"vr": "US", "Value": [status]},
            "00000902": {"vr": "LO", "Value": [reason.value]},
        },
    )


def _check_part(part: Part, study: str | None) -> tuple[_Uids | None, dict[str, Any] | None]:
    """(the part's UIDs, None) when it is accepted; (_, a FailedSOPSequence item) when not."""
    if part.content_type != "application/dicom":
        return None, _failed(SOP_CLASS_NOT_SUPPORTED, ReasonCode.UNSUPPORTED_INPUT)
    uids = _uids(part)
    if uids is None:
        return None, _failed(CANNOT_UNDERSTAND, ReasonCode.NOT_DICOM)
    if study is not None and uids.study != study:  # PS3.18 10.5.1: the study of the URL
        return uids, _failed(DATA_SET_DOES_NOT_MATCH, ReasonCode.STUDY_MISMATCH, uids)
    return uids, None


def _unavailable(exc: IntakeUnavailable, refused: list[_Uids]) -> Response:
    """PS3.18 10.5.3: 503, every instance failed with "Out of Resources" and the reason code;
    nothing was kept, the sender tries again after Retry-After."""
    body = {
        "00081198": {
            "vr": "SQ",
            "Value": [_failed(OUT_OF_RESOURCES, exc.reason, uids) for uids in refused],
        }
    }
    response = jsonify(body)
    response.status_code = 503
    response.mimetype = "application/dicom+json"
    response.headers["Retry-After"] = str(int(exc.retry_after_seconds))
    return response


def _retrieve_url(job_id: str) -> str | None:
    """From configuration, never from the request's Host header (which the client chooses)."""
    public = gateway().config.public_url
    return f"{public.rstrip('/')}/jobs/{job_id}" if public else None


@blueprint.post("/dicomweb/studies")
@blueprint.post("/dicomweb/studies/<study>")
@blueprint.post("/d/<destination>/dicomweb/studies")
@blueprint.post("/d/<destination>/dicomweb/studies/<study>")
@require(Role.SENDER)
def stow(destination: str = "default", study: str | None = None) -> Response:
    return stow_into(destination, study, "stow-rs")


def stow_into(destination: str, study: str | None, channel: str) -> Response:
    """The STOW-RS door for ``channel`` (``stow-rs``; ``return-stow-rs`` for results a
    partner returns, gateway.intake.http.returns): parse, check, spool, answer."""
    gw = gateway()
    if destination not in gw.destinations:
        raise ApiError(404, ReasonCode.UNKNOWN_DESTINATION, "no such destination")
    if request.content_length and request.content_length > gw.config.limits.max_request_bytes:
        raise ApiError(413, ReasonCode.TOO_LARGE, "request exceeds limits.max_request_bytes")
    gw.jobs.admit()  # behind or nearly full: 503 + Retry-After before anything is spooled
    with gw.jobs.incoming() as folder:  # parts stream to files: memory stays small
        root_type, parts = parse_related(
            request.headers.get("Content-Type", ""), request.stream, folder
        )
        if root_type and root_type != "application/dicom":
            raise ApiError(
                415, ReasonCode.UNSUPPORTED_MEDIA_TYPE, 'only type="application/dicom" is accepted'
            )
        if not parts:
            raise ApiError(400, ReasonCode.EMPTY_REQUEST, "no DICOM parts in the request")
        accepted: list[tuple[Part, _Uids]] = []
        failed: list[dict[str, Any]] = []
        for part in parts:
            uids, failure = _check_part(part, study)
            if failure is not None:
                failed.append(failure)
            else:
                assert uids is not None
                accepted.append((part, uids))
        receipt = None
        if accepted:
            try:
                receipt = gw.jobs.accept(
                    destination,
                    Kind.DICOM,
                    channel,
                    [part.path for part, _ in accepted],
                    principal().token_id,
                )
            except IntakeUnavailable as exc:
                return _unavailable(exc, [uids for _, uids in accepted])
    body: dict[str, Any] = {}
    if accepted:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [_ref(u.sop_class, u.sop_instance) for _, u in accepted],
        }
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    retrieve = _retrieve_url(receipt.job_id) if receipt is not None else None
    if retrieve:
        body["00081190"] = {"vr": "UR", "Value": [retrieve]}
    status = 200 if not failed else (202 if accepted else 409)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/dicom+json"
    if receipt is not None:
        response.headers["Content-Location"] = f"/jobs/{receipt.job_id}"
        response.headers["X-Job-Id"] = receipt.job_id
    return response
