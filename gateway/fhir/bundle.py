"""The single-call API (preview, tests): one resource or Bundle in, the same form out
(:func:`deidentify_fhir`), and one engine per (profile, key) per process (:func:`engine_for`).

The pipeline's FHIR stages (:class:`gateway.pipeline.fhir_stages.FhirProcessor`) flatten Bundles
for delivery; this API keeps them whole. How a Bundle is walked: :mod:`gateway.fhir.bundle_walk`
(imported by the engine; this module imports the engine, never the other way round).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from gateway.fhir.bundle_walk import index_bundle, with_entry_id
from gateway.fhir.engine import FhirDeidentifier
from gateway.fhir.references import ReferenceMode
from gateway.fhir.resolver import ChainedResolver, InMemoryPatientIndex, PatientResolver
from gateway.linkage.context import Linkage
from gateway.profiles.model import Profile

__all__ = [
    "deidentify_fhir",
    "deidentify_fhir_with_report",
    "engine_for",
    "index_bundle",
    "with_entry_id",
]

_ENGINES: dict[tuple[str, str], FhirDeidentifier] = {}
_LOCK = threading.Lock()


def engine_for(profile: Profile, linkage: Linkage) -> FhirDeidentifier:
    """One de-identifier per (profile content, key) per process: building one compiles the
    rules and may load the NLP models."""
    key = (profile.content_hash, linkage.pseudonymizer.key.fingerprint)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None or engine.linkage is not linkage:
            engine = FhirDeidentifier(profile, linkage)
            _ENGINES[key] = engine
        return engine


def deidentify_fhir(
    obj: dict[str, Any],
    profile: Profile,
    linkage: Linkage,
    resolver: PatientResolver | None = None,
) -> dict[str, Any]:
    """De-identify one resource or Bundle (any type); pure: no I/O, input not mutated.

    ``resolver`` supplies patients known from elsewhere (a batch index, the identity store);
    Patients inside the payload are always used. Raises :class:`QuarantineError` on input that
    cannot be made safe.
    """
    return deidentify_fhir_with_report(obj, profile, linkage, resolver)[0]


def deidentify_fhir_with_report(
    obj: dict[str, Any],
    profile: Profile,
    linkage: Linkage,
    resolver: PatientResolver | None = None,
) -> tuple[dict[str, Any], Counter[str]]:
    """As :func:`deidentify_fhir`, plus the count of text spans replaced by entity type."""
    engine = engine_for(profile, linkage)
    overlay = InMemoryPatientIndex(linkage.identity)
    if isinstance(obj, dict) and obj.get("resourceType") == "Patient":
        overlay.register_patient(obj)
    chained = ChainedResolver(overlay, resolver)
    result = engine.resource(obj, engine.mapper(chained), ReferenceMode.BUNDLE)
    return result.resource, result.spans
