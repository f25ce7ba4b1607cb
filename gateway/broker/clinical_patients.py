"""A patient the gateway only ever saw as DICOM, found in the clinic's FHIR server by its MRN.

A FHIR result on such a patient references ``Patient/<PatientID pseudonym>``; the vault holds
that pseudonym's original patient module (PatientID, IssuerOfPatientID) but no FHIR logical id.
The profile's identity namespaces say which FHIR identifier systems name the register of that
DICOM issuer (the default namespace when there is none); the clinical FHIR server is searched
with ``GET Patient?identifier=<system>|<MRN>`` and the result gets the literal
``Patient/<id>`` it answers.

Why a search, not a conditional reference (``Patient?identifier=...`` in a transaction) or a
logical reference by identifier: token search on ``Patient.identifier`` is what every FHIR
server offers, while conditional references are optional in R4 (and a miss fails the whole
transaction with an answer that cannot be told apart from other refusals), and a reference by
identifier alone is stored but never resolved (``Observation?subject=Patient/<id>`` and the
clinic's chart do not find it). A search tells the cases apart: one Patient (forwarded), none
(``patient-not-found``), several (``patient-ambiguous``), the server down (retry). Nothing of
the identifier or the answer is logged; reasons name no value.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import requests

from gateway.broker.resolve import STAGE
from gateway.config import StoreConfig
from gateway.errors import QuarantineError, ReasonCode
from gateway.linkage.identity import IdentityMap
from gateway.stores.base import StoreUnavailable
from gateway.stores.http import bearer_token

log = logging.getLogger(__name__)

#: the answers of a search that mean "try again later", not "no such patient": the server
#: busy, the gateway's credentials, or a base URL that is wrong (the configuration, never
#: the result, is at fault; as for the FHIR REST store)
TRANSIENT_STATUS = frozenset({401, 403, 404, 405, 408, 425, 429})


class PatientSearch(Protocol):
    def __call__(self, system: str, value: str) -> list[str]:
        """The logical ids of the Patients with identifier ``system|value``."""
        ...


class FhirPatientSearch:
    """``GET {base}/Patient?identifier=system|value`` on the clinical FHIR server."""

    def __init__(self, store: StoreConfig) -> None:
        self.url = str(store.url).rstrip("/")
        self.timeout = store.timeout_seconds
        self.headers = {"Accept": "application/fhir+json"}
        token = bearer_token(store, "clinical fhir store")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, system: str, value: str) -> list[str]:
        params = {"identifier": f"{system}|{value}", "_count": "2"}
        try:
            response = requests.get(
                f"{self.url}/Patient", params=params, headers=self.headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            log.warning("clinical fhir patient search: unreachable (%s)", type(exc).__name__)
            raise StoreUnavailable("the clinical FHIR server is unreachable") from exc
        status = response.status_code
        if status >= 500 or status in TRANSIENT_STATUS:
            raise StoreUnavailable(f"the clinical FHIR server answered HTTP {status}")
        if status != 200:
            raise QuarantineError(
                ReasonCode.PATIENT_NOT_FOUND,
                f"the clinical FHIR server refused the patient search (HTTP {status})",
                stage=STAGE,
            )
        return _ids(response)


def _ids(response: requests.Response) -> list[str]:
    try:
        body: Any = response.json()
    except ValueError:
        raise StoreUnavailable("the clinical FHIR server answered no JSON") from None
    entries = body.get("entry") if isinstance(body, dict) else None
    out = []
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        mode = (entry.get("search") or {}).get("mode") if isinstance(entry, dict) else None
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Patient"
            and isinstance(resource.get("id"), str)
            and mode in (None, "match")
        ):
            out.append(resource["id"])
    return out


class ClinicalPatients:
    """Per payload: the patient module of a DICOM-only patient -> ``Patient/<clinical id>``
    (each patient searched once per payload)."""

    def __init__(self, identity: IdentityMap | None, search: PatientSearch | None) -> None:
        self.identity = identity
        self.search = search
        self._found: dict[tuple[str, str], str] = {}

    def reference(self, patient: dict[str, str]) -> str:
        """QuarantineError when the register has no FHIR system, the clinic's FHIR store
        cannot be searched, or it holds no Patient / several for the MRN."""
        mrn = patient.get("PatientID", "")
        issuer = patient.get("IssuerOfPatientID", "")
        key = (issuer, mrn)
        if key in self._found:
            return self._found[key]
        systems = self.identity.fhir_systems_of_dicom(issuer) if self.identity else ()
        if not systems:
            raise QuarantineError(
                ReasonCode.REGISTER_UNDECLARED,
                "a Patient known only from DICOM is referenced, and the profile's identity "
                "namespaces declare no FHIR identifier system for its register (issuer)",
                stage=STAGE,
            )
        if self.search is None:
            raise QuarantineError(
                ReasonCode.CONFIGURATION_INVALID,
                "a Patient known only from DICOM is referenced, and the clinical FHIR store is "
                "not a FHIR server that can be searched by identifier",
                stage=STAGE,
            )
        ids = sorted({i for system in systems for i in self.search(system, mrn)})
        if not ids:
            raise QuarantineError(
                ReasonCode.PATIENT_NOT_FOUND,
                "the clinical FHIR server holds no Patient with the MRN of the referenced "
                "patient (known only from DICOM)",
                stage=STAGE,
            )
        if len(ids) > 1:
            raise QuarantineError(
                ReasonCode.PATIENT_AMBIGUOUS,
                "the clinical FHIR server holds several Patients with the MRN of the "
                "referenced patient (known only from DICOM)",
                stage=STAGE,
            )
        self._found[key] = f"Patient/{ids[0]}"
        return self._found[key]
