"""FHIR results returned by a partner, made resources of the original patient.

Observation, DiagnosticReport, ImagingStudy and Task (alone, or as the entries of a Bundle).
Every reference (subject, patient, basedOn, imagingStudy, derivedFrom, focus, for, ...) to a
resource the gateway delivered maps back to the original ``Type/id``; references between the
returned resources (in this payload or an earlier one) follow their new ids; an identifier whose value the gateway issued
(accession, other identifiers, study UIDs as ``urn:oid:``) gets its original back, and the
ImagingStudy series and instance UIDs too. A Patient the gateway delivered as DICOM only has
no FHIR id: it is found in the clinic's FHIR server by its MRN (``clinical_patients``). Each resource gets a new id (the same for a
resend: idempotent PUT) and a ``meta.tag`` marking it a research result. Free text (notes,
conclusions, narrative) is left as the partner wrote it: nothing is written into it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from gateway.broker.clinical_patients import ClinicalPatients
from gateway.broker.resolve import STAGE, ReturnResolver
from gateway.config import ReturnsConfig
from gateway.errors import QuarantineError, ReasonCode
from gateway.linkage.issued import IssuedKind

RETURNABLE_TYPES = frozenset({"Observation", "DiagnosticReport", "ImagingStudy", "Task"})
_ID_KINDS = (IssuedKind.IDENTIFIER, IssuedKind.ACCESSION, IssuedKind.UID)


def resources_of(obj: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """(fullUrl, resource) of a resource or a Bundle's entries; anything else quarantined."""
    if obj.get("resourceType") == "Bundle":
        out = []
        for entry in obj.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                raise QuarantineError(ReasonCode.FHIR_INVALID, "an entry without a resource")
            url = entry.get("fullUrl")
            out.append((url if isinstance(url, str) else None, resource))
        return out
    return [(None, obj)]


def map_back(
    obj: dict[str, Any],
    resolver: ReturnResolver,
    settings: ReturnsConfig,
    destination: str,
    patients: ClinicalPatients | None = None,
) -> list[dict[str, Any]]:
    """The clinic's resources for a returned payload (a copy; ``obj`` is not changed).
    ``patients`` finds the clinic's Patient of a patient delivered as DICOM only."""
    patients = patients or ClinicalPatients(None, None)
    entries = resources_of(copy.deepcopy(obj))
    if not entries:
        raise QuarantineError(ReasonCode.EMPTY_REQUEST, "no resources", stage=STAGE)
    local: dict[str, str] = {}  # the partner's Type/id and fullUrls -> new Type/id
    for url, resource in entries:
        rtype = resource.get("resourceType")
        if rtype not in RETURNABLE_TYPES:
            raise QuarantineError(
                ReasonCode.UNSUPPORTED_INPUT,
                "returned FHIR must be Observation, DiagnosticReport, ImagingStudy or Task",
                stage=STAGE,
            )
        partner_id = str(resource.get("id") or url or len(local))
        new = f"{rtype}/{resolver.mint_id(str(rtype), partner_id)}"
        if resource.get("id"):
            local[f"{rtype}/{resource['id']}"] = new
            resolver.minted.add(f"{rtype}/{resource['id']}")  # cited later: found by it
        if url:
            local[url] = new
        resource["_new"] = new
    out = []
    for _url, resource in entries:
        new = resource.pop("_new")
        resource["id"] = new.split("/", 1)[1]
        for holder in _references(resource):
            holder["reference"] = _reference(holder["reference"], local, resolver, patients)
        for identifier in _identifiers(resource):
            _identifier(identifier, resolver)
        if resource["resourceType"] == "ImagingStudy":
            _imaging_study_uids(resource, resolver)
        _mark(resource, settings, destination)
        out.append(resource)
    return out


def _reference(
    reference: str, local: dict[str, str], resolver: ReturnResolver, patients: ClinicalPatients
) -> str:
    if reference.startswith("#"):
        return reference  # a contained resource
    if reference in local:
        return local[reference]
    parts = reference.rstrip("/").split("/")
    literal = "/".join(parts[-2:]) if len(parts) >= 2 else reference
    if literal in local:
        return local[literal]
    found = resolver.find(literal, (IssuedKind.FHIR_ID,))
    if found is not None:
        return found.original
    rtype, _, pseudonym = literal.partition("/")
    if resolver.returned is not None and resolver.returned.contains(resolver.destination, literal):
        return f"{rtype}/{resolver.mint_id(rtype, pseudonym)}"  # returned in an earlier request
    if rtype == "Patient":  # a patient delivered as DICOM only: no FHIR id, its MRN
        patient = resolver.find(pseudonym, (IssuedKind.PATIENT,))
        if patient is not None and "PatientID" in patient.context:
            return patients.reference(patient.context)
    return resolver.require(literal, (IssuedKind.FHIR_ID,), "a reference").original


def _identifier(identifier: dict[str, Any], resolver: ReturnResolver) -> None:
    value = identifier.get("value")
    if not isinstance(value, str) or not value:
        return
    bare = value.removeprefix("urn:oid:")
    found = resolver.find(bare, _ID_KINDS)
    if found is None:
        return  # the partner's own identifier: theirs, left as it is
    original = found.original
    identifier["value"] = "urn:oid:" + original if value.startswith("urn:oid:") else original
    system = found.context.get("system")
    if system and found.kind is IssuedKind.IDENTIFIER:
        identifier["system"] = system


def _imaging_study_uids(resource: dict[str, Any], resolver: ReturnResolver) -> None:
    for series in resource.get("series") or []:
        if isinstance(series, dict) and isinstance(series.get("uid"), str):
            series["uid"] = resolver.map_uid(series["uid"], "a series")
            for instance in series.get("instance") or []:
                if isinstance(instance, dict) and isinstance(instance.get("uid"), str):
                    instance["uid"] = resolver.map_uid(instance["uid"], "an instance")


def _mark(resource: dict[str, Any], settings: ReturnsConfig, destination: str) -> None:
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    tags = [t for t in meta.get("tag") or [] if isinstance(t, dict)]
    tag = {
        "system": settings.tag_system,
        "code": settings.tag_code,
        "display": f"research result returned by destination {destination}",
    }
    if not any(t.get("system") == tag["system"] and t.get("code") == tag["code"] for t in tags):
        tags.append(tag)
    meta["tag"] = tags
    resource["meta"] = meta


def _references(obj: Any) -> Iterator[dict[str, Any]]:
    """Every Reference (an object with a string ``reference``), contained resources aside."""
    stack = [(obj, True)]
    while stack:
        item, top = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("reference"), str):
                yield item
            for key, value in item.items():
                if isinstance(value, (dict, list)) and not (top and key == "contained"):
                    stack.append((value, False))
        elif isinstance(item, list):
            stack.extend((v, False) for v in item if isinstance(v, (dict, list)))


def _identifiers(obj: Any) -> Iterator[dict[str, Any]]:
    """Every Identifier: the values of ``identifier`` elements (Reference.identifier too)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "identifier":
                    for ident in value if isinstance(value, list) else [value]:
                        if isinstance(ident, dict):
                            yield ident
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
