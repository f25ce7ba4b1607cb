"""Validation of output resources with fhir.resources, reported as an OperationOutcome.

Issues name the element path and the kind of error, never the offending value (pydantic's
``input`` is dropped: it may be PHI).
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from gateway.errors import QuarantineError, ReasonCode
from gateway.profiles.fhir_model import FhirVersion


@lru_cache(maxsize=4)
def _package(version: FhirVersion) -> Any:
    return importlib.import_module(
        "fhir.resources" if version is FhirVersion.R5 else "fhir.resources.R4B"
    )


def operation_outcome(issues: list[tuple[str, str, str]]) -> dict[str, Any]:
    """OperationOutcome from (code, diagnostics, expression) triples."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": code,
                "diagnostics": text,
                **({"expression": [expr]} if expr else {}),
            }
            for code, text, expr in issues
        ],
    }


def validation_issues(resource: dict[str, Any], version: FhirVersion) -> list[tuple[str, str, str]]:
    """Problems found by the fhir.resources model of the resource's type (empty: valid)."""
    rtype = resource.get("resourceType")
    try:
        klass = _package(version).get_fhir_model_class(str(rtype))
    except (KeyError, ValueError):
        return [("not-supported", "unknown resource type", "")]
    try:
        klass.model_validate(resource)
    except ValidationError as exc:
        out = []
        for error in exc.errors()[:20]:
            loc = ".".join(str(p) for p in error.get("loc", ()))
            kind = str(error.get("type", "invalid"))
            # custom validators may quote the value in their message: keep only the error type
            message = kind if kind in ("value_error", "assertion_error") else error.get("msg", "")
            expression = f"{rtype}.{loc}" if loc else str(rtype)
            out.append(("structure", f"{kind}: {message}"[:200], expression))
        return out
    except Exception as exc:  # noqa: BLE001 - fhir.resources raises assorted errors
        return [("exception", type(exc).__name__, str(rtype))]
    return []


class FhirValidationFailed(QuarantineError):
    """Output that does not validate; ``outcome`` is the OperationOutcome of its issues (paths
    and error kinds, no values)."""

    def __init__(self, issues: list[tuple[str, str, str]]) -> None:
        self.outcome = operation_outcome(issues)
        super().__init__(
            ReasonCode.FHIR_INVALID,
            "output does not validate: " + "; ".join(f"{e}: {d}" for _, d, e in issues[:3]),
            stage="fhir-validate",
            ref=(issues[0][2] or None) if issues else None,
        )


def validate_output(resource: dict[str, Any], version: FhirVersion) -> None:
    """Raise QuarantineError(FHIR_INVALID) with an OperationOutcome-style detail."""
    issues = validation_issues(resource, version)
    if issues:
        text = "; ".join(f"{expr}: {diag}" for _, diag, expr in issues[:5])
        raise QuarantineError(
            ReasonCode.FHIR_INVALID, f"output does not validate: {text}", stage="fhir-validate"
        )
