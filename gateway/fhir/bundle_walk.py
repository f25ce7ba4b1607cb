"""How a Bundle (every type) is walked in BUNDLE form: entries kept together.

A Bundle keeps its form: fullUrls are pseudonymised the same way as the references pointing at
them (:mod:`gateway.fhir.references`), so ``urn:uuid:`` references still resolve inside it.
``Bundle.link`` (search URLs carry parameters) and ``signature`` are removed; request URLs,
``ifNoneExist`` and response locations are rewritten like references; conditional headers and
ETags are dropped.

The engine walks each entry's resource; this module knows it only as an :class:`EntryWalker`
(it never imports the engine, the engine imports it). The single-call API is
:mod:`gateway.fhir.bundle`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from gateway.errors import QuarantineError, ReasonCode
from gateway.fhir.references import IdMapper, ReferenceMode
from gateway.fhir.resolver import (
    PAYLOAD_TERM_TYPES,
    ChainedResolver,
    InMemoryPatientIndex,
    PatientResolver,
)
from gateway.fhir.state import NO_PATIENT, ResourceState, WalkContext, add_security_labels
from gateway.linkage.context import Linkage
from gateway.linkage.dates import fhir_year_only, shift_fhir_date
from gateway.profiles.fhir_model import FhirSettings
from gateway.profiles.model import DateMethod


class EntryWalker(Protocol):
    """What the Bundle walk needs from the engine (:class:`gateway.fhir.engine.FhirDeidentifier`)."""

    linkage: Linkage
    settings: FhirSettings

    def mapper(self, resolver: PatientResolver) -> IdMapper: ...

    def walk_resource(
        self, resource: Any, walk: WalkContext, parent: ResourceState | None = None
    ) -> dict[str, Any]: ...


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


def deidentify_bundle(
    walker: EntryWalker, bundle: dict[str, Any], walk: WalkContext
) -> dict[str, Any]:
    """De-identify a Bundle in BUNDLE form; its entries are resolved against its own Patients and
    fullUrls first, then against the caller's resolver."""
    overlay = InMemoryPatientIndex(walker.linkage.identity)
    index_bundle(bundle, overlay)
    mapper = walker.mapper(ChainedResolver(overlay, walk.mapper.resolver))
    inner = WalkContext(mapper, walk.schema, ReferenceMode.BUNDLE, walk.counts)
    return _bundle(walker, bundle, inner, overlay)


def _bundle(
    walker: EntryWalker,
    bundle: dict[str, Any],
    walk: WalkContext,
    overlay: InMemoryPatientIndex,
) -> dict[str, Any]:
    mapper = walk.mapper
    p = walker.linkage.pseudonymizer
    people = overlay.patients()
    person = mapper.person(next(iter(people)) if len(people) == 1 else NO_PATIENT)

    def date(value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        if walker.linkage.date_method is DateMethod.SHIFT:
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
            out["entry"] = [_entry(walker, e, walk, date) for e in value]
        elif key in ("type", "total", "language", "implicitRules"):
            out[key] = value
        else:
            raise QuarantineError(
                ReasonCode.FHIR_INVALID, "element not defined for Bundle", stage="fhir"
            )
    if walker.settings.security_labels:
        add_security_labels(out, {"PSEUDED"})
    return out


def _entry(
    walker: EntryWalker, entry: Any, walk: WalkContext, date: Callable[[Any], str | None]
) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise QuarantineError(
            ReasonCode.FHIR_INVALID, "Bundle.entry item is not an object", stage="fhir"
        )
    mapper, mode = walk.mapper, walk.mode
    out: dict[str, Any] = {}
    resource = (
        with_entry_id(entry) if isinstance(entry.get("resource"), dict) else entry.get("resource")
    )
    if isinstance(entry.get("fullUrl"), str):
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        rid = resource.get("id") if isinstance(resource, dict) else None
        out["fullUrl"] = mapper.full_url(entry["fullUrl"], rtype, rid)
    if resource is not None:
        out["resource"] = walker.walk_resource(resource, walk)
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
