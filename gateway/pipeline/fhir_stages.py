"""The FHIR stages of one payload, in order: parse -> (patients: the runner) -> de-identify ->
validate -> provenance. gateway.fhir does the work; this composes it once per profile + key.

One semantics for every intake: the output is a flat list of resources; Bundle entries are
de-identified one by one with the Bundle's own fullUrls and Patients known, so bundle-local
``urn:uuid:`` references become literal ``Type/id``; an entry without id takes its urn:uuid.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from gateway.errors import QuarantineError, ReasonCode
from gateway.fhir.bundle import engine_for, index_bundle, with_entry_id
from gateway.fhir.provenance import provenance as _provenance
from gateway.fhir.references import ReferenceMode
from gateway.fhir.resolver import ChainedResolver, InMemoryPatientIndex, PatientResolver
from gateway.fhir.sniff import parse_fhir_json
from gateway.fhir.validation import operation_outcome, validation_issues
from gateway.linkage.context import Linkage
from gateway.profiles.fhir_model import FhirVersion, ValidationMode
from gateway.profiles.model import Profile


class FhirValidationFailed(QuarantineError):
    """The de-identified output does not validate; carries the OperationOutcome."""

    def __init__(self, issues: list[tuple[str, str, str]]) -> None:
        detail = "output does not validate: " + "; ".join(
            f"{expr}: {diag}" for _, diag, expr in issues[:3]
        )
        super().__init__(ReasonCode.FHIR_INVALID, detail, stage="fhir-validate")
        self.outcome = operation_outcome(issues)


@dataclass(frozen=True)
class ProcessedFhir:
    resources: tuple[dict[str, Any], ...]
    spans: Counter[str]
    version: FhirVersion | None


class FhirProcessor:
    """Everything needed to de-identify FHIR under one profile + key. Build once."""

    def __init__(self, profile: Profile, linkage: Linkage) -> None:
        self.profile = profile
        self.linkage = linkage
        self.engine = engine_for(profile, linkage)
        self.validate = profile.fhir.validation is ValidationMode.OUTPUT
        self.wants_provenance = bool(profile.fhir.provenance)

    def parse(self, data: bytes) -> dict[str, Any]:
        return parse_fhir_json(data)

    def process(self, obj: dict[str, Any], resolver: PatientResolver) -> ProcessedFhir:
        overlay = InMemoryPatientIndex(self.linkage.identity)
        if obj.get("resourceType") == "Bundle":
            index_bundle(obj, overlay)
        elif obj.get("resourceType") == "Patient":
            overlay.register_patient(obj)
        mapper = self.engine.mapper(ChainedResolver(overlay, resolver))
        spans: Counter[str] = Counter()
        out: list[dict[str, Any]] = []
        version: FhirVersion | None = None
        for resource in _flatten(obj):
            result = self.engine.resource(resource, mapper, ReferenceMode.FLAT)
            if self.validate:
                issues = validation_issues(result.resource, result.version)
                if issues:
                    raise FhirValidationFailed(issues)
            spans.update(result.spans)
            version = result.version
            out.append(result.resource)
        return ProcessedFhir(tuple(out), spans, version)

    def provenance(self, patient_ids: list[str]) -> dict[str, Any]:
        return _provenance(self.profile, self.linkage, patient_ids)


def _flatten(obj: dict[str, Any], depth: int = 0) -> list[dict[str, Any]]:
    """The resources of a payload: a Bundle's entries (nested Bundles flattened too)."""
    if obj.get("resourceType") != "Bundle":
        return [obj]
    if depth > 8:
        raise QuarantineError(ReasonCode.FHIR_INVALID, "Bundles nested too deeply", stage="fhir")
    entries = obj.get("entry") or []
    if not isinstance(entries, list):
        raise QuarantineError(ReasonCode.FHIR_INVALID, "Bundle.entry is not an array", stage="fhir")
    out: list[dict[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise QuarantineError(
                ReasonCode.FHIR_INVALID, "Bundle.entry item is not an object", stage="fhir"
            )
        if isinstance(entry.get("resource"), dict):
            out.extend(_flatten(with_entry_id(entry), depth + 1))
    return out
