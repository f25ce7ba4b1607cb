"""The FHIR stages of one payload, in order: parse -> resolve patient -> de-identify -> validate
-> provenance. Every intake (the CLI's files, FHIR REST) runs the same stages, so the same
payload gives the same resources everywhere; gateway.fhir does the work.

One semantics for delivery: a payload becomes a flat list of resources. Bundle entries
(nested Bundles too) are delivered one by one, the Bundle itself is not; an entry without id
takes the UUID of its ``urn:uuid:`` fullUrl as id, and every bundle-local reference becomes the
literal ``Type/id`` of its target, so the resources mean the same thing outside the Bundle.

A stage raises :class:`QuarantineError` (never another exception) when the payload cannot be made
safe; details name element paths and exception types, never values.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from gateway.errors import DeidError, QuarantineError, ReasonCode
from gateway.fhir.bundle import engine_for, index_bundle, with_entry_id
from gateway.fhir.parse import MAX_DEPTH, parse_fhir, require_resource
from gateway.fhir.provenance import provenance as _provenance
from gateway.fhir.references import ReferenceMode
from gateway.fhir.resolver import ChainedResolver, InMemoryPatientIndex, PatientResolver
from gateway.fhir.validation import FhirValidationFailed, validation_issues
from gateway.linkage.context import Linkage
from gateway.profiles.fhir_model import FhirVersion, ValidationMode
from gateway.profiles.model import Profile

__all__ = [
    "MAX_DEPTH",
    "FhirProcessor",
    "FhirValidationFailed",
    "PatientReference",
    "ProcessedFhir",
    "flat_resources",
    "patients_in",
    "require_resource",
    "unresolved_references",
]

_RELATIVE = re.compile(r"^Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")
_ABSOLUTE = re.compile(r"^https?://.+/Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")
_CONDITIONAL = re.compile(r"^Patient\?(.+)$")


@dataclass(frozen=True)
class PatientReference:
    """A reference to a Patient: by logical id (``Patient/abc``, absolute or relative) or by
    identifier (``Patient?identifier=system|value``). Holds source identifiers: never log it."""

    logical_id: str | None
    identifiers: tuple[tuple[str, str], ...] = ()  # (system, value)


@dataclass(frozen=True)
class ProcessedFhir:
    """The de-identified resources of one payload, ready to deliver."""

    resources: list[dict[str, Any]]
    spans: Counter[str]  # free-text spans replaced, by entity type
    version: FhirVersion  # the version read (``auto``: that of the first resource)


class FhirProcessor:
    """Everything needed to run the FHIR stages under one profile + key. Build once; one
    processor serves many threads (each call has its own state)."""

    def __init__(self, profile: Profile, linkage: Linkage) -> None:
        self.profile = profile
        self.linkage = linkage
        self.engine = engine_for(profile, linkage)
        self.validate = profile.fhir.validation is ValidationMode.OUTPUT
        self.wants_provenance = bool(profile.fhir.provenance)

    # -- parse ----------------------------------------------------------------------------------
    def parse(self, data: bytes) -> dict[str, Any]:
        """A FHIR resource or Bundle from JSON bytes (:func:`gateway.fhir.parse.parse_fhir`)."""
        return parse_fhir(data)

    # -- resolve patient ------------------------------------------------------------------------
    def patients(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The Patients the payload carries (itself, or entries of Bundles, nested included)."""
        return patients_in(obj)

    def unresolved(self, obj: dict[str, Any], resolver: PatientResolver) -> list[PatientReference]:
        """The Patient references of the payload that neither its own Patients nor ``resolver``
        resolve (each once). Resources that refer to them must wait or be refused."""
        return unresolved_references(obj, resolver)

    # -- de-identify + validate -----------------------------------------------------------------
    def process(self, obj: dict[str, Any], resolver: PatientResolver | None) -> ProcessedFhir:
        """De-identify (and, when the profile says so, validate) every resource of the payload.

        ``resolver`` knows the patients seen before (the CLI's run index, the service's identity
        index); the payload's own Patients and fullUrls are used first.
        """
        require_resource(obj)
        try:
            return self._process(obj, resolver)
        except DeidError:
            raise
        except RecursionError:
            raise _too_deep() from None
        except Exception as exc:  # noqa: BLE001 - any engine failure on bad input quarantines
            raise QuarantineError(
                ReasonCode.FHIR_INVALID,
                f"input the de-identifier cannot read ({type(exc).__name__})",
                stage="fhir",
            ) from None

    def _process(self, obj: dict[str, Any], resolver: PatientResolver | None) -> ProcessedFhir:
        overlay = InMemoryPatientIndex(self.linkage.identity)
        if obj["resourceType"] == "Patient":
            overlay.register_patient(obj)
        elif obj["resourceType"] == "Bundle":
            index_bundle(obj, overlay)
        mapper = self.engine.mapper(ChainedResolver(overlay, resolver))
        spans: Counter[str] = Counter()
        resources: list[dict[str, Any]] = []
        version: FhirVersion | None = None
        for resource in flat_resources(obj):
            result = self.engine.resource(resource, mapper, ReferenceMode.FLAT)
            if self.validate:
                issues = validation_issues(result.resource, result.version)
                if issues:
                    raise FhirValidationFailed(issues)
            spans.update(result.spans)
            resources.append(result.resource)
            version = version or result.version
        return ProcessedFhir(resources, spans, version or self.engine.schemas[0].version)

    # -- provenance -----------------------------------------------------------------------------
    def provenance(self, patient_ids: list[str]) -> dict[str, Any]:
        """One Provenance naming the profile and key, targeting the delivered Patients."""
        return _provenance(self.profile, self.linkage, patient_ids)


# -- the pieces, usable without a processor -------------------------------------------------------
def flat_resources(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The resources to deliver, in order: the object itself, or the entries of a Bundle
    (nested Bundles flattened, entries without a resource skipped)."""
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if item.get("resourceType") != "Bundle":
            yield item
            continue
        entries = item.get("entry") or []
        if not isinstance(entries, list):
            raise QuarantineError(
                ReasonCode.FHIR_INVALID, "Bundle.entry is not an array", stage="fhir"
            )
        nested: list[dict[str, Any]] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise QuarantineError(
                    ReasonCode.FHIR_INVALID, "Bundle.entry item is not an object", stage="fhir"
                )
            if isinstance(entry.get("resource"), dict):
                nested.append(with_entry_id(entry))
        stack.extend(reversed(nested))


def patients_in(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The Patients of a payload: itself, or Bundle entries (nested Bundles included)."""
    out: list[dict[str, Any]] = []
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if not isinstance(item, dict):
            continue
        if item.get("resourceType") == "Patient":
            out.append(item)
        elif item.get("resourceType") == "Bundle" and isinstance(item.get("entry"), list):
            entries = [e for e in item["entry"] if isinstance(e, dict)]
            stack.extend(
                with_entry_id(e) for e in reversed(entries) if isinstance(e.get("resource"), dict)
            )
    return out


def unresolved_references(obj: dict[str, Any], resolver: PatientResolver) -> list[PatientReference]:
    """See :meth:`FhirProcessor.unresolved`."""
    local = patients_in(obj)
    local_ids = {p["id"] for p in local if isinstance(p.get("id"), str)}
    local_identifiers = {
        (str(i.get("system") or ""), i["value"].strip())
        for p in local
        if isinstance(p.get("identifier"), list)
        for i in p["identifier"]
        if isinstance(i, dict) and isinstance(i.get("value"), str)
    }
    missing: dict[PatientReference, None] = {}
    for reference in _references(obj):
        match = _RELATIVE.match(reference) or _ABSOLUTE.match(reference)
        if match:
            logical_id = match.group(1)
            if logical_id not in local_ids and resolver.person_by_id(logical_id) is None:
                missing.setdefault(PatientReference(logical_id))
            continue
        match = _CONDITIONAL.match(reference)
        if match:
            identifiers = tuple(
                (system, value)
                for name, query in parse_qsl(match.group(1))
                if name == "identifier" and "|" in query
                for system, _, value in [query.partition("|")]
            )
            if identifiers and not any(
                (system, value.strip()) in local_identifiers
                or resolver.person_by_identifier(system, value) is not None
                for system, value in identifiers
            ):
                missing.setdefault(PatientReference(None, identifiers))
    return list(missing)


def _references(node: Any) -> Iterator[str]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "reference" and isinstance(value, str):
                    yield value
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))


def _too_deep() -> QuarantineError:
    return QuarantineError(
        ReasonCode.FHIR_INVALID, "nested deeper than the de-identifier walks", stage="fhir"
    )
