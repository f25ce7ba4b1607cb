"""Bundles (every type) and the single-call API :func:`deidentify_fhir` for the HTTP service.

A Bundle keeps its form: fullUrls are pseudonymised the same way as the references pointing at
them (:mod:`gateway.fhir.references`), so ``urn:uuid:`` references still resolve inside it.
``Bundle.link`` (search URLs carry parameters) and ``signature`` are removed; request URLs,
``ifNoneExist`` and response locations are rewritten like references; conditional headers and
ETags are dropped.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from gateway.errors import QuarantineError, ReasonCode
from gateway.fhir.references import IdMapper, ReferenceMode
from gateway.fhir.resolver import (
    PAYLOAD_TERM_TYPES,
    ChainedResolver,
    InMemoryPatientIndex,
    PatientResolver,
)
from gateway.linkage.context import Linkage
from gateway.profiles.model import Profile

if TYPE_CHECKING:
    from gateway.fhir.engine import FhirDeidentifier

_ENGINES: dict[tuple[str, str], FhirDeidentifier] = {}
_LOCK = threading.Lock()


def engine_for(profile: Profile, linkage: Linkage) -> FhirDeidentifier:
    """One de-identifier per (profile content, key) per process."""
    from gateway.fhir.engine import FhirDeidentifier

    key = (profile.content_hash, linkage.pseudonymizer.key.fingerprint)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None or engine.linkage is not linkage:
            engine = FhirDeidentifier(profile, linkage)
            _ENGINES[key] = engine
        return engine


def with_entry_id(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry's resource, given the UUID of its ``urn:uuid:`` fullUrl as id when it has none
    (a transaction POST): flattened output then keeps every reference to it resolvable."""
    resource: dict[str, Any] = entry["resource"]
    full_url = entry.get("fullUrl")
    if "id" not in resource and isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
        return {**resource, "id": full_url[9:]}
    return resource


def index_bundle(bundle: dict[str, Any], index: InMemoryPatientIndex) -> None:
    """Register a bundle's Patients and fullUrls (nested bundles included)."""
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        resource = with_entry_id(entry)
        rtype = resource.get("resourceType")
        rid = resource.get("id")
        if rtype == "Patient":
            index.register_patient(resource, full_url)
        elif rtype == "Bundle":
            index_bundle(resource, index)
        elif rtype in PAYLOAD_TERM_TYPES:
            index.register_payload_terms(resource)  # its names leave every free text
        if full_url and isinstance(rtype, str) and isinstance(rid, str):
            index.register_entry(full_url, rtype, rid)


def deidentify_bundle_with(
    engine: FhirDeidentifier, bundle: dict[str, Any], mapper: IdMapper, mode: ReferenceMode
) -> dict[str, Any]:
    """De-identify a Bundle in BUNDLE form (entries kept together)."""
    overlay = InMemoryPatientIndex(engine.linkage.identity)
    index_bundle(bundle, overlay)
    inner = engine.mapper(ChainedResolver(overlay, mapper.resolver))
    saved = engine._mapper
    engine._mapper = inner
    try:
        return _bundle(engine, bundle, inner, overlay)
    finally:
        engine._mapper = saved


def _bundle(
    engine: FhirDeidentifier,
    bundle: dict[str, Any],
    mapper: IdMapper,
    overlay: InMemoryPatientIndex,
) -> dict[str, Any]:
    from gateway.fhir.state import NO_PATIENT
    from gateway.fhir.state import add_security_labels as _label
    from gateway.linkage.dates import fhir_year_only, shift_fhir_date
    from gateway.profiles.model import DateMethod

    mode = ReferenceMode.BUNDLE
    p = engine.linkage.pseudonymizer
    people = {ref for ref in [overlay.person_by_id(k) for k in overlay._by_id] if ref}
    person = mapper.person(next(iter(people)) if len(people) == 1 else NO_PATIENT)

    def date(value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        if engine.linkage.date_method is DateMethod.SHIFT:
            return shift_fhir_date(value, person.date_offset_days)
        year = fhir_year_only(value)
        return f"{year}-01-01T00:00:00Z" if year else None

    out: dict[str, Any] = {"resourceType": "Bundle"}
    for key, value in bundle.items():
        if key in ("resourceType", "link", "signature", "fhir_comments"):
            continue
        if key == "id" and isinstance(value, str):
            out["id"] = p.resource_id("Bundle", value)
        elif (
            key == "identifier" and isinstance(value, dict) and isinstance(value.get("value"), str)
        ):
            out["identifier"] = {
                **value,
                "value": p.identifier(str(value.get("system") or ""), value["value"]),
            }
        elif key == "timestamp":
            shifted = date(value)
            if shifted:
                out["timestamp"] = shifted
        elif key == "meta":
            meta = {k: v for k, v in value.items() if k in ("profile", "tag", "security")}
            if "lastUpdated" in value and date(value["lastUpdated"]):
                meta["lastUpdated"] = date(value["lastUpdated"])
            out["meta"] = meta
        elif key == "entry":
            if not isinstance(value, list):
                raise QuarantineError(
                    ReasonCode.FHIR_INVALID, "Bundle.entry is not an array", stage="fhir"
                )
            out["entry"] = [_entry(engine, e, mapper, mode, date) for e in value]
        elif key in ("type", "total", "language", "implicitRules"):
            out[key] = value
        else:
            raise QuarantineError(
                ReasonCode.FHIR_INVALID, "element not defined for Bundle", stage="fhir"
            )
    if engine.settings.security_labels:
        _label(out, {"PSEUDED"})
    return out


def _entry(
    engine: FhirDeidentifier, entry: Any, mapper: IdMapper, mode: ReferenceMode, date: Any
) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise QuarantineError(
            ReasonCode.FHIR_INVALID, "Bundle.entry item is not an object", stage="fhir"
        )
    out: dict[str, Any] = {}
    resource = with_entry_id(entry) if isinstance(entry.get("resource"), dict) else entry.get("resource")
    if isinstance(entry.get("fullUrl"), str):
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        rid = resource.get("id") if isinstance(resource, dict) else None
        out["fullUrl"] = mapper.full_url(entry["fullUrl"], rtype, rid)
    if resource is not None:
        out["resource"] = engine._resource(resource, mode, parent=None)
    if isinstance(entry.get("search"), dict):
        out["search"] = {k: v for k, v in entry["search"].items() if k in ("mode", "score")}
    request = entry.get("request")
    if isinstance(request, dict):
        req: dict[str, Any] = {"method": request.get("method")}
        if isinstance(request.get("url"), str):
            req["url"] = mapper.request_url(request["url"], mode)
        if isinstance(request.get("ifNoneExist"), str):
            rtype = str(resource.get("resourceType")) if isinstance(resource, dict) else "Resource"
            cond = mapper.conditional(rtype, request["ifNoneExist"])
            if cond and "?" in cond:
                req["ifNoneExist"] = cond.split("?", 1)[1]
        out["request"] = req
    response = entry.get("response")
    if isinstance(response, dict):
        resp: dict[str, Any] = {"status": response.get("status")}
        if isinstance(response.get("location"), str):
            loc = mapper.reference(response["location"], mode)
            if loc:
                resp["location"] = loc
        if date(response.get("lastModified")):
            resp["lastModified"] = date(response["lastModified"])
        out["response"] = resp
    return out


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
