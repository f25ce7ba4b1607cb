"""Which patient a FHIR payload speaks of, and whether the patient directory knows them yet.

A resource whose patient is unknown is neither guessed nor forwarded: it waits (pending) until
the Patient arrives, or goes to quarantine (``unresolved-patient``) when it cannot arrive any
more: in the service when its time runs out, in a CLI run at the end (every Patient of the run
was read first).

A :class:`PatientDirectory` is what the runner asks: the service's is the persistent identity
index (``gateway.pipeline.index_directory``), a CLI run's is the run's own in-memory index
(:class:`RunDirectory`). Both hash what they report, so no identifier leaves them in clear.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.fhir.resolver import InMemoryPatientIndex, PatientResolver


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


def unresolved_patients(
    obj: dict[str, Any],
    resolver: PatientResolver,
    id_hash: Callable[[str], str],
    identifier_hash: Callable[[str, str], str],
) -> list[Unresolved]:
    """Patient references in ``obj`` that neither the payload nor ``resolver`` can resolve,
    each named by a keyed hash (the FHIR stages find them: ``unresolved_references``)."""
    from gateway.pipeline.fhir_stages import unresolved_references  # FHIR runs only

    missing: dict[str, Unresolved] = {}
    for reference in unresolved_references(obj, resolver):
        if reference.logical_id is not None:
            h = id_hash(reference.logical_id)
            missing.setdefault(h, Unresolved(h, reference.logical_id))
        elif reference.identifiers:
            system, value = reference.identifiers[0]
            h = identifier_hash(system, value)
            missing.setdefault(h, Unresolved(h, None))
    return list(missing.values())


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
