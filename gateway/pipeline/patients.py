"""Which patient a FHIR payload speaks of, and whether the identity index knows them yet.

A resource whose patient is unknown is neither guessed nor forwarded: it waits (pending) until
the Patient arrives, or goes to quarantine when its time runs out. The references are found by
the FHIR stages (:mod:`gateway.pipeline.fhir_stages`, against any PatientResolver); this module
names each by the identity index's keyed hash, which is what a pending item waits for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.persistence.identity import IdentityIndex
from gateway.pipeline.fhir_stages import patients_in, unresolved_references

__all__ = ["Unresolved", "patients_in", "unresolved_patients"]


@dataclass(frozen=True)
class Unresolved:
    id_hash: str
    logical_id: str | None  # for a source-server lookup; never logged or stored


def unresolved_patients(obj: dict[str, Any], index: IdentityIndex) -> list[Unresolved]:
    """Patient references in ``obj`` that neither the payload nor the index can resolve."""
    missing: dict[str, Unresolved] = {}
    for ref in unresolved_references(obj, index):
        if ref.logical_id is not None:
            h = index.patient_id_hash(ref.logical_id)
        else:
            h = index.identifier_hash(*ref.identifiers[0])
        missing.setdefault(h, Unresolved(h, ref.logical_id))
    return list(missing.values())
