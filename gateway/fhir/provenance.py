"""The Provenance resource a delivery carries when the profile asks (``fhir.provenance``):
the profile (name, version, content hash) and the key fingerprint, targeting its Patients."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.linkage.context import Linkage
from gateway.profiles.model import Profile


def provenance(profile: Profile, linkage: Linkage, patient_ids: list[str]) -> dict[str, Any]:
    """One Provenance per run naming the profile (name, version, content hash) and the key
    fingerprint, targeting the Patients delivered (``fhir.provenance: true``)."""
    run_key = f"{profile.content_hash}|{'|'.join(sorted(set(patient_ids)))}"
    return {
        "resourceType": "Provenance",
        "id": linkage.pseudonymizer.resource_id("Provenance", run_key),
        "target": [{"reference": f"Patient/{pid}"} for pid in sorted(set(patient_ids))],
        "recorded": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "policy": [
            f"urn:deid-gateway:profile:{profile.name}:{profile.version}:{profile.content_hash}"
        ],
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                    "code": "PSEUDED",
                    "display": "pseudonymized",
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/"
                            "provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"display": f"deid-gateway (key {linkage.pseudonymizer.key.fingerprint})"},
            }
        ],
    }
