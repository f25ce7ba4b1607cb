"""The service's patient directory: the persistent identity index of one destination, and the
hospital FHIR server as patient source when the destination names one. Apart from
:mod:`gateway.pipeline.patients` so that a directory run never loads the database layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.fhir.resolver import PatientResolver
from gateway.persistence.identity import IdentityIndex
from gateway.pipeline.patients import Unresolved, unresolved_patients


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
