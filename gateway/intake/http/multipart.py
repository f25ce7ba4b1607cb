"""multipart/related (RFC 2387) as DICOMweb STOW-RS sends it."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import ReasonCode
from gateway.intake.http.errors import ApiError


@dataclass(frozen=True)
class Part:
    content_type: str
    body: bytes


def _params(header: str) -> tuple[str, dict[str, str]]:
    pieces = [p.strip() for p in header.split(";")]
    params = {}
    for piece in pieces[1:]:
        if "=" in piece:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
    return pieces[0].lower(), params


def parse_related(content_type: str, body: bytes) -> tuple[str, list[Part]]:
    """(declared root type, parts). Raises ApiError(400/415) with a precise reason."""
    media, params = _params(content_type)
    if media != "multipart/related":
        raise ApiError(415, ReasonCode.UNSUPPORTED_MEDIA_TYPE, "STOW-RS needs multipart/related; type=\"application/dicom\"")
    boundary = params.get("boundary")
    if not boundary:
        raise ApiError(400, ReasonCode.BAD_MULTIPART, "multipart/related without a boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise ApiError(400, ReasonCode.BAD_MULTIPART, "no parts found for the declared boundary")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # closing delimiter
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ApiError(400, ReasonCode.BAD_MULTIPART, "a part has no header/body separator")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        part_type = _params(headers.get("content-type", params.get("type", "application/dicom")))[0]
        parts.append(Part(part_type, payload))
    return params.get("type", "").lower(), parts
