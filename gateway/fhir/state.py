"""Shared pieces of the FHIR walk: the per-call and per-resource state, the output record, typed
errors and ``meta.security`` labels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import QuarantineError, ReasonCode
from gateway.fhir.references import IdMapper, ReferenceMode
from gateway.fhir.rules import Chain
from gateway.fhir.schema import Schema
from gateway.linkage.context import PersonPseudonym
from gateway.linkage.pseudonym import PersonRef
from gateway.profiles.fhir_model import FhirVersion
from gateway.text.context import PhiContext

SECURITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
SECURITY_DISPLAY = {
    "PSEUDED": "pseudonymized",
    "REDACTED": "redacted",
    "ABSTRED": "abstracted",
    "MASKED": "masked",
}
NO_PATIENT = PersonRef("fhir:no-patient", "")
TEXT_TYPES = frozenset({"string", "markdown"})
ENCRYPTABLE_TYPES = frozenset({"string", "markdown", "uri", "url"})
MAX_ELEMENT_DEPTH = 100
"""Deepest element path walked (``Patient.extension.extension...``). Real resources stay far
below (Synthea: 6); a deeper one is refused before the recursive walk could overflow the stack,
and its output stays within what a JSON writer accepts (orjson: 254 levels)."""
NUMBER_TYPES = frozenset({"decimal", "integer", "integer64", "positiveInt", "unsignedInt"})


@dataclass(frozen=True)
class WalkContext:
    """What one call of the de-identifier reads and counts, passed down the walk (the engine
    itself holds no per-call state, so one engine serves many threads). A Bundle walks its
    entries with a context of its own mapper (its fullUrls) and the same schema and counts."""

    mapper: IdMapper
    schema: Schema  # the element tables of the FHIR version this call reads
    mode: ReferenceMode
    counts: Counter[str] = field(default_factory=Counter)  # text spans replaced, by entity

    def with_mapper(self, mapper: IdMapper) -> WalkContext:
        return WalkContext(mapper, self.schema, self.mode, self.counts)


@dataclass
class ResourceState:
    """What the walk of one resource needs and accumulates (mutable, local to one resource)."""

    walk: WalkContext
    resource_type: str
    person: PersonPseudonym
    phi: PhiContext
    contained: bool = False
    labels: set[str] = field(default_factory=set)

    @property
    def mode(self) -> ReferenceMode:
        return self.walk.mode


@dataclass
class DeidOutput:
    """One de-identified resource (or bundle) and the text spans replaced, by entity."""

    resource: dict[str, Any]
    spans: Counter[str]
    version: FhirVersion


def element_path(chain: Chain) -> str:
    return ".".join([chain[0][0], *(name for name, _ in chain[1:])])


SCHEMA_STAGE = "fhir-schema"  # the input does not fit the version's element tables


def invalid(detail: str, chain: Chain, stage: str = "fhir") -> QuarantineError:
    """The path is made of the schema's element names (never of data): safe in messages."""
    path = element_path(chain)
    return QuarantineError(ReasonCode.FHIR_INVALID, f"{detail} at {path}", stage=stage, ref=path)


def too_deep(chain: Chain) -> QuarantineError:
    """Only the root of the path: the whole path would be as long as the nesting."""
    return QuarantineError(
        ReasonCode.FHIR_INVALID,
        f"elements nested deeper than {MAX_ELEMENT_DEPTH} levels",
        stage="fhir",
        ref=element_path(chain[:2]),
    )


def add_security_labels(resource: dict[str, Any], codes: set[str]) -> None:
    meta = dict(resource.get("meta") or {})
    security = list(meta.get("security") or [])
    present = {(s.get("system"), s.get("code")) for s in security if isinstance(s, dict)}
    for code in sorted(codes):
        if (SECURITY_SYSTEM, code) not in present:
            security.append(
                {"system": SECURITY_SYSTEM, "code": code, "display": SECURITY_DISPLAY[code]}
            )
    meta["security"] = security
    resource["meta"] = meta
    if next(iter(resource)) != "resourceType":
        return
    # keep resourceType/id first, meta next, for readable output
    ordered: dict[str, Any] = {
        k: resource[k] for k in ("resourceType", "id", "meta") if k in resource
    }
    ordered.update({k: v for k, v in resource.items() if k not in ordered})
    resource.clear()
    resource.update(ordered)
