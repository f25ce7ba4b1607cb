"""Logical ids, fullUrls and references: rewritten so that every reference still resolves.

Ids (documented in docs of :mod:`gateway.fhir`):

* ``Patient.id`` = the person's ``patient_id``, i.e. exactly the DICOM PatientID pseudonym
  (``linkage.person(ref).patient_id``), so ``Patient/<DICOM PatientID>`` is the join.
* any other ``<Type>.id`` = ``pseudonymizer.resource_id(Type, id)``.
* ``urn:uuid:X`` fullUrls = ``urn:uuid:`` + ``pseudonymizer.uuid(X)`` (a valid UUID); a Patient's
  own fullUrl = ``urn:uuid:`` + ``pseudonymizer.uuid("Patient|" + person_key)``.
* ``urn:oid:X`` = ``urn:oid:`` + ``pseudonymizer.uid(X)`` (a valid OID, the DICOM UID pseudonym).
* absolute ``http(s)://base/Type/id`` = ``<research_base_url>/Type/<new id>``.
* conditional ``Type?identifier=sys|val``: a Patient in a declared namespace becomes the literal
  ``Patient/<patient_id>``; others keep the search with the identifier pseudonymised; search
  parameters other than ``identifier`` are dropped.
* contained ``#id`` and the contained resource's id: ``c`` + a keyed token of the id.

In FLAT mode (NDJSON output) bundle-local references (``urn:uuid:``) become literal
``Type/<new id>`` via the resolver's fullUrl index, since NDJSON has no fullUrls.
"""

from __future__ import annotations

import re
import urllib.parse
from enum import Enum

from gateway.fhir.resolver import FALLBACK_NAMESPACE, PatientResolver
from gateway.linkage.context import Linkage, PersonPseudonym
from gateway.linkage.issued import IssuedKind, note
from gateway.linkage.pseudonym import PersonRef

_RELATIVE = re.compile(
    r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_ABSOLUTE = re.compile(
    r"^(https?://.+?)/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$"
)
CACHE_LIMIT = 200_000  # per mapper (one batch run / one API call)
_CONDITIONAL = re.compile(r"^([A-Z][A-Za-z]+)\?(.*)$")


class ReferenceMode(str, Enum):
    BUNDLE = "bundle"  # keep bundle-local forms (urn:uuid) resolvable against fullUrls
    FLAT = "flat"  # every reference literal Type/id (NDJSON output)


class IdMapper:
    """Deterministic id/reference pseudonyms for one linkage + resolver."""

    def __init__(
        self,
        linkage: Linkage,
        resolver: PatientResolver,
        *,
        research_base_url: str,
        patient_identifier_system: str | None = None,
    ) -> None:
        self.linkage = linkage
        self.p = linkage.pseudonymizer
        self.resolver = resolver
        self.base = research_base_url.rstrip("/")
        self.patient_identifier_system = patient_identifier_system
        self._people: dict[PersonRef, PersonPseudonym] = {}
        self._ids: dict[tuple[str, str], str] = {}
        self._refs: dict[tuple[str, ReferenceMode], str | None] = {}

    # -- people ---------------------------------------------------------------------------------
    def person(self, ref: PersonRef) -> PersonPseudonym:
        found = self._people.get(ref)
        if found is None:
            if len(self._people) > 100_000:
                self._people.clear()
            found = self._people[ref] = self.linkage.person(ref)
        return found

    def patient_by_id(self, logical_id: str) -> PersonRef:
        return self.resolver.person_by_id(logical_id) or PersonRef(FALLBACK_NAMESPACE, logical_id)

    def patient_full_url(self, person: PersonPseudonym) -> str:
        return "urn:uuid:" + self.p.uuid(f"Patient|{person.person_key}")

    # -- ids ------------------------------------------------------------------------------------
    def resource_id(self, resource_type: str, logical_id: str) -> str:
        if resource_type == "Patient":
            found = self.person(self.patient_by_id(logical_id)).patient_id
        else:
            key = (resource_type, logical_id)
            cached = self._ids.get(key)
            if cached is None:
                if len(self._ids) > CACHE_LIMIT:
                    self._ids.clear()
                cached = self._ids[key] = self.p.resource_id(resource_type, logical_id)
            found = cached
        # noted on every call, cached or not: the vault learns it with each payload
        note(IssuedKind.FHIR_ID, f"{resource_type}/{found}", f"{resource_type}/{logical_id}")
        return found

    def contained_id(self, local_id: str) -> str:
        return "c" + self.p.token("contained-id", local_id, 12)

    def full_url(self, url: str, resource_type: str | None, logical_id: str | None) -> str:
        if url.startswith("urn:uuid:"):
            person = self.resolver.person_by_full_url(url)
            if person is not None:
                return self.patient_full_url(self.person(person))
            return "urn:uuid:" + self.p.uuid(url[9:].lower())
        if url.startswith("urn:oid:"):
            return "urn:oid:" + self.p.uid(url[8:])
        match = _ABSOLUTE.match(url)
        if match:
            return (
                f"{self.base}/{match.group(2)}/{self.resource_id(match.group(2), match.group(3))}"
            )
        if resource_type and logical_id:
            return f"{self.base}/{resource_type}/{self.resource_id(resource_type, logical_id)}"
        return "urn:uuid:" + self.p.uuid(url)

    # -- references -----------------------------------------------------------------------------
    def person_of_reference(self, reference: str) -> PersonRef | None:
        """The person a reference points at, when it points at a Patient."""
        if reference.startswith("urn:uuid:"):
            return self.resolver.person_by_full_url(reference)
        match = _RELATIVE.match(reference) or None
        if match:
            return self.patient_by_id(match.group(2)) if match.group(1) == "Patient" else None
        match = _ABSOLUTE.match(reference)
        if match:
            return self.patient_by_id(match.group(3)) if match.group(2) == "Patient" else None
        match = _CONDITIONAL.match(reference)
        if match and match.group(1) == "Patient":
            for system, value in _identifier_params(match.group(2)):
                found = self.resolver.person_by_identifier(system, value)
                if found is not None:
                    return found
        return None

    def reference(self, reference: str, mode: ReferenceMode) -> str | None:
        """The rewritten reference; None when nothing safe and resolvable can be kept."""
        key = (reference, mode)
        if key in self._refs:
            return self._refs[key]
        if len(self._refs) > CACHE_LIMIT:
            self._refs.clear()
        found = self._refs[key] = self._reference(reference, mode)
        return found

    def _reference(self, reference: str, mode: ReferenceMode) -> str | None:
        if reference.startswith("#"):
            return "#" + self.contained_id(reference[1:]) if len(reference) > 1 else "#"
        if reference.startswith("urn:uuid:"):
            if mode is ReferenceMode.FLAT:
                target = self.resolver.resource_by_full_url(reference)
                if target is not None:
                    new_id = self.resource_id(target.resource_type, target.logical_id)
                    return f"{target.resource_type}/{new_id}"
            return self.full_url(reference, None, None)
        if reference.startswith("urn:oid:"):
            return "urn:oid:" + self.p.uid(reference[8:])
        match = _RELATIVE.match(reference)
        if match:
            return f"{match.group(1)}/{self.resource_id(match.group(1), match.group(2))}"
        match = _ABSOLUTE.match(reference)
        if match:
            new_id = self.resource_id(match.group(2), match.group(3))
            if mode is ReferenceMode.FLAT:
                return f"{match.group(2)}/{new_id}"
            return f"{self.base}/{match.group(2)}/{new_id}"
        match = _CONDITIONAL.match(reference)
        if match:
            return self.conditional(match.group(1), match.group(2))
        return None

    def conditional(self, resource_type: str, query: str) -> str | None:
        params = _identifier_params(query)
        if not params:
            return None
        if resource_type == "Patient":
            for system, value in params:
                person = self.resolver.person_by_identifier(system, value)
                if person is not None:
                    return f"Patient/{self.person(person).patient_id}"
        mapped = [
            f"{s}|{self.p.identifier(s, v)}" if s else self.p.identifier("", v) for s, v in params
        ]
        return f"{resource_type}?" + "&".join(
            "identifier=" + urllib.parse.quote(m, safe=":/|.-_") for m in mapped
        )

    def request_url(self, url: str, mode: ReferenceMode) -> str:
        """Bundle.entry.request.url: ``Type``, ``Type/id`` or a conditional."""
        if re.fullmatch(r"[A-Z][A-Za-z]+", url):
            return url
        return self.reference(url, mode) or url.split("?", 1)[0].split("/", 1)[0]


def _identifier_params(query: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name != "identifier" or not value:
            continue
        system, sep, code = value.partition("|")
        out.append((system, code) if sep else ("", system))
    return out
