"""Which patient a FHIR payload speaks of, and whether the patient directory knows them yet.

A resource whose patient is unknown is neither guessed nor forwarded: it waits (pending) until
the Patient arrives, or goes to quarantine (``unresolved-patient``) when it cannot arrive any
more: in the service when its time runs out, in a CLI run at the end (every Patient of the run
was read first).

A :class:`PatientDirectory` is what the runner asks: the service's is the persistent identity
index (:class:`IndexDirectory`), a CLI run's is the run's own in-memory index
(:class:`RunDirectory`). Both hash what they report, so no identifier leaves them in clear.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from gateway.fhir.resolver import InMemoryPatientIndex, PatientResolver
from gateway.persistence.identity import IdentityIndex

_RELATIVE = re.compile(r"^Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")
_ABSOLUTE = re.compile(r"^https?://.+/Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")
_CONDITIONAL = re.compile(r"^Patient\?(.+)$")


@dataclass(frozen=True)
class Unresolved:
    id_hash: str
    logical_id: str | None  # for a source-server lookup; never logged or stored


class PatientDirectory(Protocol):
    """What the runner needs to know about patients, whatever holds them."""

    @property
    def resolver(self) -> PatientResolver: ...

    def learn(self, patients: list[dict[str, Any]]) -> tuple[str, ...]:
        """Register Patients that passed; the identity hashes learned (to release waiters)."""

    def dicom_person_key(self, patient_id: str, issuer: str | None) -> str | None:
        """The person key for a DICOM patient, or None for the one derived from the id."""

    def unresolved(self, obj: dict[str, Any]) -> list[Unresolved]:
        """Patient references in ``obj`` that neither the payload nor the directory resolve."""

    def fetch_missing(self, missing: list[Unresolved]) -> bool:
        """Ask a patient source for what is missing; True when something was learned."""


def patients_in(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The Patients a payload carries (a Patient, or Patients inside Bundles, nested too)."""
    if obj.get("resourceType") == "Patient":
        return [obj]
    if obj.get("resourceType") != "Bundle" or not isinstance(obj.get("entry"), list):
        return []
    found: list[dict[str, Any]] = []
    for entry in obj["entry"]:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            found.extend(patients_in(resource))
    return found


def _references(node: Any, depth: int = 0) -> Iterator[str]:
    if depth > 200:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item, depth + 1)


def unresolved_patients(
    obj: dict[str, Any],
    resolver: PatientResolver,
    id_hash: Callable[[str], str],
    identifier_hash: Callable[[str, str], str],
) -> list[Unresolved]:
    """Patient references in ``obj`` that neither the payload nor ``resolver`` can resolve."""
    local_ids = {str(p.get("id")) for p in patients_in(obj) if p.get("id")}
    missing: dict[str, Unresolved] = {}
    for reference in _references(obj):
        match = _RELATIVE.match(reference) or _ABSOLUTE.match(reference)
        if match:
            logical_id = match.group(1)
            if logical_id in local_ids or resolver.person_by_id(logical_id) is not None:
                continue
            h = id_hash(logical_id)
            missing.setdefault(h, Unresolved(h, logical_id))
            continue
        match = _CONDITIONAL.match(reference)
        if not match:
            continue
        first_hash = None
        for name, value in parse_qsl(match.group(1)):
            if name != "identifier" or "|" not in value:
                continue
            system, _, ident = value.partition("|")
            first_hash = first_hash or identifier_hash(system, ident)
            if resolver.person_by_identifier(system, ident) is not None:
                break
        else:
            if first_hash:
                missing.setdefault(first_hash, Unresolved(first_hash, None))
    return list(missing.values())


class IndexDirectory:
    """The service's directory: the persistent identity index of one destination, and the
    hospital FHIR server as patient source when the destination names one."""

    def __init__(self, index: IdentityIndex, fetch: Callable[[str], dict[str, Any] | None] | None):
        self.index = index
        self.fetch = fetch

    @property
    def resolver(self) -> PatientResolver:
        return self.index

    def learn(self, patients: list[dict[str, Any]]) -> tuple[str, ...]:
        hashes: list[str] = []
        for patient in patients:
            hashes.extend(self.index.learn_patient(patient).hashes)
        return tuple(hashes)

    def dicom_person_key(self, patient_id: str, issuer: str | None) -> str | None:
        return self.index.learn_dicom(patient_id, issuer)

    def unresolved(self, obj: dict[str, Any]) -> list[Unresolved]:
        return unresolved_patients(
            obj, self.index, self.index.patient_id_hash, self.index.identifier_hash
        )

    def fetch_missing(self, missing: list[Unresolved]) -> bool:
        if self.fetch is None:
            return False
        learned = False
        for unresolved in missing:
            if unresolved.logical_id is None:
                continue
            patient = self.fetch(unresolved.logical_id)
            if patient is not None:
                self.index.learn_patient(patient)
                learned = True
        return learned


def _local_hash(kind: str, value: str) -> str:
    """A run-local, value-free name for an identifier (it never leaves the process)."""
    return hashlib.sha256(f"{kind}|{value}".encode()).hexdigest()[:32]


class RunDirectory:
    """A CLI run's directory: every Patient (and bundle fullUrl) of the run, read in a first
    pass so that order on disk does not matter. DICOM person keys derive from the id."""

    def __init__(self, index: InMemoryPatientIndex) -> None:
        self.index = index

    @property
    def resolver(self) -> PatientResolver:
        return self.index

    def learn(self, patients: list[dict[str, Any]]) -> tuple[str, ...]:
        for patient in patients:
            self.index.register_patient(patient)
        return ()

    def dicom_person_key(self, patient_id: str, issuer: str | None) -> str | None:
        return None

    def unresolved(self, obj: dict[str, Any]) -> list[Unresolved]:
        return unresolved_patients(
            obj,
            self.index,
            lambda logical_id: _local_hash("fhir-id", logical_id),
            lambda system, value: _local_hash("fhir-identifier", f"{system}|{value}"),
        )

    def fetch_missing(self, missing: list[Unresolved]) -> bool:
        return False
