"""Which person a FHIR resource belongs to: the PatientResolver interface and an in-memory index.

A resource's dates move by *its patient's* offset, and its references to the patient become the
patient's pseudonym, so the de-identifier must know, for ``Patient/123``, ``urn:uuid:...`` or
``Patient?identifier=sys|val``, which person that is. A batch run registers every Patient first
(two passes over the files); a persistent identity index (a later issue) implements the same
:class:`PatientResolver` protocol so resources arriving days after their Patient still link.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.linkage.identity import IdentityMap
from gateway.linkage.pseudonym import PersonRef
from gateway.text.context import PhiContext

FALLBACK_NAMESPACE = "fhir:Patient.id"
"""Namespace of a patient known only by logical id (no identifier in a declared system)."""


@dataclass(frozen=True)
class ResourceKey:
    """A resource as a bundle names it: type and original logical id."""

    resource_type: str
    logical_id: str


class PatientResolver(Protocol):
    def person_by_id(self, logical_id: str) -> PersonRef | None: ...

    def person_by_identifier(self, system: str, value: str) -> PersonRef | None: ...

    def person_by_full_url(self, full_url: str) -> PersonRef | None: ...

    def resource_by_full_url(self, full_url: str) -> ResourceKey | None: ...

    def phi_context(self, person: PersonRef) -> PhiContext | None: ...


def person_of_patient(resource: dict[str, Any], identity: IdentityMap) -> PersonRef:
    """The person of a Patient resource: its first identifier in a declared namespace, else its
    logical id in :data:`FALLBACK_NAMESPACE` (consistent within FHIR, not linkable to DICOM)."""
    for identifier in resource.get("identifier") or ():
        if not isinstance(identifier, dict):
            continue
        value, system = identifier.get("value"), identifier.get("system")
        if not isinstance(system, str | None):
            continue  # invalid FHIR: the walk refuses it, the index must not fail on it
        if isinstance(value, str) and value.strip():
            ref = identity.from_fhir(system, value)
            if ref is not None:
                return ref
    return PersonRef(FALLBACK_NAMESPACE, str(resource.get("id") or ""))


def phi_of_patient(resource: dict[str, Any]) -> PhiContext:
    """The linked deny-list from one Patient: names, identifiers, address, telecom, birth date."""
    ctx = PhiContext()

    def names(items: Any) -> None:
        for name in items if isinstance(items, list) else [items]:
            if not isinstance(name, dict):
                continue
            parts = [*(name.get("given") or []), name.get("family") or ""]
            whole = " ".join(str(p) for p in parts if p)
            if whole:
                ctx.add_name(whole)
            for part in parts:
                if part:
                    ctx.add_name(str(part))
            if name.get("text"):
                ctx.add_name(str(name["text"]))

    def addresses(items: Any) -> None:
        for address in items if isinstance(items, list) else [items]:
            if not isinstance(address, dict):
                continue
            for line in address.get("line") or []:
                ctx.add_address(str(line))  # and the street without its house number
            for key in ("city", "postalCode", "text", "district"):
                if address.get(key):
                    ctx.add_address(str(address[key]))  # ZIP+4 and its 5 digits

    def telecoms(items: Any) -> None:
        for contact in items or []:
            if isinstance(contact, dict) and contact.get("value"):
                ctx.add_identifier(str(contact["value"]))

    names(resource.get("name") or [])
    addresses(resource.get("address") or [])
    telecoms(resource.get("telecom"))
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("value"):
            ctx.add_identifier(str(identifier["value"]))
    for contact in resource.get("contact") or []:
        if isinstance(contact, dict):
            names(contact.get("name") or [])
            addresses(contact.get("address") or [])
            telecoms(contact.get("telecom"))
    for extension in resource.get("extension") or []:
        if isinstance(extension, dict):
            if (
                isinstance(extension.get("valueString"), str)
                and "maiden" in str(extension.get("url", "")).lower()
            ):
                ctx.add_name(extension["valueString"])
            if isinstance(extension.get("valueAddress"), dict):
                addresses(extension["valueAddress"])
    birth = resource.get("birthDate")
    if isinstance(birth, str) and len(birth) == 10:
        try:
            ctx.add_date(dt.date.fromisoformat(birth))
        except ValueError:
            pass
    return ctx


PAYLOAD_TERM_TYPES = frozenset({"Organization", "Location", "Practitioner"})
"""Resources whose names are in the payload and go from every free text of it: institutions and
facilities (a note naming the hospital locates the patient) and the practitioners."""


def phi_of_payload(resource: dict[str, Any]) -> PhiContext:
    """Deny-list terms a payload's Organization, Location or Practitioner gives every patient's
    free text: names and aliases (institutions, facilities), the practitioners' names."""
    ctx = PhiContext()
    if resource.get("resourceType") == "Practitioner":
        for name in resource.get("name") or []:
            if isinstance(name, dict):
                parts = [*(name.get("given") or []), name.get("family") or ""]
                whole = " ".join(str(p) for p in parts if p)
                if whole:
                    ctx.add_name(whole)
                if name.get("family"):
                    ctx.add_name(str(name["family"]))
        return ctx
    for value in [resource.get("name"), *(resource.get("alias") or [])]:
        if isinstance(value, str) and value.strip():
            ctx.add_other(value)
    return ctx


class InMemoryPatientIndex:
    """A :class:`PatientResolver` filled by registering Patients and bundle entries."""

    def __init__(self, identity: IdentityMap) -> None:
        self.identity = identity
        self._by_id: dict[str, PersonRef] = {}
        self._by_identifier: dict[tuple[str, str], PersonRef] = {}
        self._by_full_url: dict[str, PersonRef] = {}
        self._resources: dict[str, ResourceKey] = {}
        self._phi: dict[PersonRef, PhiContext] = {}
        self._payload = PhiContext()  # Organization/Location/Practitioner names: every patient

    def __len__(self) -> int:
        return len(self._phi)

    def register_patient(self, resource: dict[str, Any], full_url: str | None = None) -> PersonRef:
        person = person_of_patient(resource, self.identity)
        logical_id = resource.get("id")
        if isinstance(logical_id, str):
            self._by_id[logical_id] = person
        if full_url:
            self._by_full_url[full_url] = person
        for identifier in resource.get("identifier") or []:
            if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
                key = (str(identifier.get("system") or ""), identifier["value"].strip())
                self._by_identifier[key] = person
        phi = phi_of_patient(resource)
        if person in self._phi:
            self._phi[person].merge(phi)
        else:
            self._phi[person] = phi
        return person

    def register_payload_terms(self, resource: dict[str, Any]) -> None:
        """Names an Organization, Location or Practitioner of the payload gives every free text
        of it (see :data:`PAYLOAD_TERM_TYPES`)."""
        self._payload.merge(phi_of_payload(resource))

    def register_entry(self, full_url: str, resource_type: str, logical_id: str) -> None:
        self._resources[full_url] = ResourceKey(resource_type, logical_id)

    def patients(self) -> set[PersonRef]:
        """The people of the Patients registered by logical id."""
        return set(self._by_id.values())

    def add_phi(self, person: PersonRef, phi: PhiContext) -> None:
        """Merge identifiers seen elsewhere (e.g. linked DICOM headers) into the deny-list."""
        self._phi.setdefault(person, PhiContext()).merge(phi)

    # -- PatientResolver ------------------------------------------------------------------------
    def person_by_id(self, logical_id: str) -> PersonRef | None:
        return self._by_id.get(logical_id)

    def person_by_identifier(self, system: str, value: str) -> PersonRef | None:
        found = self._by_identifier.get((system, value.strip()))
        return found or self.identity.from_fhir(system, value)

    def person_by_full_url(self, full_url: str) -> PersonRef | None:
        return self._by_full_url.get(full_url)

    def resource_by_full_url(self, full_url: str) -> ResourceKey | None:
        return self._resources.get(full_url)

    def phi_context(self, person: PersonRef) -> PhiContext | None:
        own = self._phi.get(person)
        if self._payload.is_empty():
            return own
        merged = PhiContext()
        merged.merge(self._payload)
        if own is not None:
            merged.merge(own)
        return merged


class ChainedResolver:
    """Ask ``first`` (e.g. this bundle's own patients), then ``then`` (the caller's index)."""

    def __init__(self, first: PatientResolver, then: PatientResolver | None) -> None:
        self.first = first
        self.then = then

    def person_by_id(self, logical_id: str) -> PersonRef | None:
        found = self.first.person_by_id(logical_id)
        return found if found or self.then is None else self.then.person_by_id(logical_id)

    def person_by_identifier(self, system: str, value: str) -> PersonRef | None:
        found = self.first.person_by_identifier(system, value)
        if found or self.then is None:
            return found
        return self.then.person_by_identifier(system, value)

    def person_by_full_url(self, full_url: str) -> PersonRef | None:
        found = self.first.person_by_full_url(full_url)
        return found if found or self.then is None else self.then.person_by_full_url(full_url)

    def resource_by_full_url(self, full_url: str) -> ResourceKey | None:
        found = self.first.resource_by_full_url(full_url)
        return found if found or self.then is None else self.then.resource_by_full_url(full_url)

    def phi_context(self, person: PersonRef) -> PhiContext | None:
        mine = self.first.phi_context(person)
        theirs = self.then.phi_context(person) if self.then is not None else None
        if mine and theirs:
            merged = PhiContext()
            merged.merge(mine)
            merged.merge(theirs)
            return merged
        return mine or theirs
