"""Recognising FHIR files by content, and the first pass of a directory run: every Patient
and bundle fullUrl of the run, so an Observation read before ``Patient.ndjson`` still gets its
patient's date offset and deny-list."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.errors import QuarantineError, ReasonCode
from gateway.fhir.parse import DECODE_ERRORS, loads, parse_fhir
from gateway.fhir.resolver import PAYLOAD_TERM_TYPES, InMemoryPatientIndex
from gateway.linkage.context import Linkage

_DECODE_ERRORS: tuple[type[Exception], ...] = (*DECODE_ERRORS, RecursionError)

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
SNIFF_BYTES = 65536
_RESOURCE_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')


def looks_like_fhir(path: Path) -> bool:
    """A JSON object with ``resourceType`` near the start (a resource, a Bundle, or NDJSON)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError:
        return False
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text.startswith(b"{") and _RESOURCE_TYPE.search(text) is not None


def is_ndjson(path: Path) -> bool:
    if path.suffix.lower() in NDJSON_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            first = fh.readline(SNIFF_BYTES * 16).strip()
            rest = fh.read(1024).strip()
    except OSError:
        return False
    if not first.startswith(b"{") or not rest.startswith(b"{"):
        return False
    try:
        return isinstance(loads(first), dict)
    except _DECODE_ERRORS:
        return False


def _load_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise QuarantineError(
            ReasonCode.UNSUPPORTED_INPUT, "file cannot be read", stage="fhir"
        ) from exc
    try:
        return loads(data)
    except _DECODE_ERRORS:
        raise QuarantineError(ReasonCode.FHIR_INVALID, "not valid JSON", stage="fhir") from None


#: What the first pass reads of an NDJSON file: Patients, and whose names leave free text.
_FIRST_PASS_TYPES = frozenset({"Patient", "Bundle", *PAYLOAD_TERM_TYPES})


def _iter_objects(path: Path) -> Iterator[Any]:
    """Every top-level object of a file, for the indexing pass (errors skipped: pass 2 reports)."""
    if is_ndjson(path):
        with open(path, "rb") as fh:
            for raw in fh:
                found = _RESOURCE_TYPE.search(raw)
                if found is None or found.group(1).decode() not in _FIRST_PASS_TYPES:
                    continue
                try:
                    yield loads(raw)
                except _DECODE_ERRORS:
                    continue
    else:
        try:
            yield _load_json(path)
        except QuarantineError:
            return


def build_index(paths: list[Path], linkage: Linkage) -> InMemoryPatientIndex:
    """Pass 1: every Patient and bundle fullUrl of the run. An object that cannot be read here
    is skipped: the runner reads it again in pass 2 and gives it its reason."""
    index = InMemoryPatientIndex(linkage.identity)
    for path in paths:
        for obj in _iter_objects(path):
            if not isinstance(obj, dict):
                continue
            try:
                _register(obj, index)
            except Exception:  # noqa: BLE001, S112 - pass 2 quarantines it with a reason
                continue
    return index


def _register(obj: dict[str, Any], index: InMemoryPatientIndex) -> None:
    from gateway.fhir.bundle_walk import index_bundle  # FHIR runs only: not at import

    if obj.get("resourceType") == "Patient":
        index.register_patient(obj)
    elif obj.get("resourceType") == "Bundle":
        index_bundle(obj, index)
    elif obj.get("resourceType") in PAYLOAD_TERM_TYPES:
        index.register_payload_terms(obj)  # an Organization's name leaves every free text


def parse_fhir_json(data: bytes) -> dict[str, Any]:
    """A FHIR JSON document (resource or Bundle), or the reason it is not one. Every intake and
    the runner parse with this, so the same bytes get the same reason at every door."""
    return parse_fhir(data, stage="intake")
