"""FHIR JSON bytes -> a resource or Bundle, or the reason they are not one (never another
exception): ``not-fhir`` for what is not JSON or has no ``resourceType``, ``fhir-invalid`` for
JSON nested deeper than anything real (orjson refuses beyond 1024 levels with the same error as
for broken JSON, so depth is measured on the bytes when no parser accepted them)."""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import QuarantineError, ReasonCode

try:  # orjson is ~3x faster; the standard library is the fallback
    import orjson

    def loads(data: bytes) -> Any:
        """JSON bytes -> object; raises one of ``DECODE_ERRORS`` (or RecursionError)."""
        return orjson.loads(data)

    DECODE_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover
    import json

    def loads(data: bytes) -> Any:
        """JSON bytes -> object; raises one of ``DECODE_ERRORS`` (or RecursionError)."""
        return json.loads(data)

    DECODE_ERRORS = (ValueError,)

MAX_DEPTH = 200
"""JSON nesting (objects and arrays) beyond which input no parser accepts is reported as
``fhir-invalid`` (too deep) rather than ``not-fhir``. Input that parses is held to
:data:`gateway.fhir.state.MAX_ELEMENT_DEPTH` by the walk itself (no extra pass over the data)."""

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")


def parse_fhir(data: bytes, stage: str = "intake") -> dict[str, Any]:
    """A FHIR resource or Bundle from JSON bytes; details carry no values."""
    try:
        obj = loads(data)
    except RecursionError:
        raise _too_deep(stage) from None
    except DECODE_ERRORS:
        if bracket_depth(data) > MAX_DEPTH:
            raise _too_deep(stage) from None
        raise QuarantineError(ReasonCode.NOT_FHIR, "not valid JSON", stage=stage) from None
    return require_resource(obj, stage)


def require_resource(obj: Any, stage: str = "intake") -> dict[str, Any]:
    """``obj`` when it is a JSON object with a string ``resourceType``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("resourceType"), str):
        raise QuarantineError(ReasonCode.NOT_FHIR, "JSON without resourceType", stage=stage)
    return obj


def bracket_depth(data: bytes) -> int:
    """Deepest nesting of ``{`` / ``[`` outside strings (for input no parser accepted)."""
    depth = deepest = 0
    for byte in _NOT_BRACKETS.sub(b"", _STRINGS.sub(b"", data)):
        if byte in b"{[":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _too_deep(stage: str) -> QuarantineError:
    return QuarantineError(
        ReasonCode.FHIR_INVALID, f"JSON nested deeper than {MAX_DEPTH} levels", stage=stage
    )
