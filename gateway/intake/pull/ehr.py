"""The FHIR route: the entry's Patient by identifier (or a Group's reference), then everything
of that patient: ``Patient/$everything`` where the server has it, else one search per resource
type of ``sources.ehr.resource_types``. Paging follows ``next`` links on the same base only
(the bearer token goes nowhere else)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import Enum
from typing import Any

import requests

from gateway.config import FhirSourceConfig
from gateway.errors import ReasonCode
from gateway.intake.pull.limits import LimitedSession, RateLimiter
from gateway.intake.pull.pacs import SourceUnavailable

ACCEPT = {"Accept": "application/fhir+json"}
PAGE = "100"
#: answers meaning "this server has no $everything": fall back to per-type searches
NO_OPERATION = frozenset({400, 404, 405, 422, 501})
MR_CODE = "MR"


class FhirRoute(str, Enum):
    EVERYTHING = "patient-everything"
    PER_TYPE = "per-type-search"


class FhirEhr:
    def __init__(self, config: FhirSourceConfig, limiter: RateLimiter | None = None) -> None:
        self.base = config.url.rstrip("/")
        self.types = dict(config.resource_types)
        self.session = LimitedSession(
            limiter or RateLimiter(config.requests_per_second),
            config.token_env,
            config.timeout_seconds,
        )
        self._everything: bool | None = None  # learned from the first patient

    # -- the Patient --------------------------------------------------------------------------
    def patients(self, value: str, systems: Sequence[str | None]) -> list[dict[str, Any]]:
        """Patients with this identifier (in one of ``systems``; None: any system)."""
        found: dict[str, dict[str, Any]] = {}
        for system in systems or (None,):
            token = f"{system}|{value}" if system else value
            for resource in self._search("Patient", {"identifier": token}):
                found[str(resource.get("id"))] = resource
        return list(found.values())

    def read(self, reference: str) -> dict[str, Any] | None:
        response = self._get(f"{self.base}/{reference}", None, "Patient read")
        if response.status_code in (404, 410):
            return None
        self._ok(response, "Patient read")
        body: dict[str, Any] = response.json()
        return body

    # -- everything of the patient ------------------------------------------------------------
    def everything(self, patient_id: str) -> tuple[FhirRoute, list[dict[str, Any]]]:
        """Every resource of the patient but the Patient itself, each once."""
        resources: dict[tuple[str, str], dict[str, Any]] = {}
        route = FhirRoute.PER_TYPE
        if self._everything is not False:
            url = f"{self.base}/Patient/{patient_id}/$everything"
            first = self._get(url, {"_count": PAGE}, "Patient/$everything")
            if first.status_code in NO_OPERATION:
                self._everything = False
            else:
                self._ok(first, "Patient/$everything")
                self._everything = True
                route = FhirRoute.EVERYTHING
                for resource in self._pages(first, "Patient/$everything"):
                    _add(resources, resource)
        if route is FhirRoute.PER_TYPE:
            for resource_type, parameter in self.types.items():
                params = {parameter: f"Patient/{patient_id}"}
                for resource in self._search(resource_type, params):
                    _add(resources, resource)
        resources.pop(("Patient", patient_id), None)
        return route, list(resources.values())

    # -- HTTP ---------------------------------------------------------------------------------
    def _search(self, resource_type: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        step = f"{resource_type} search"
        first = self._get(f"{self.base}/{resource_type}", {**params, "_count": PAGE}, step)
        self._ok(first, step)
        for resource in self._pages(first, step):
            if resource.get("resourceType") == resource_type:  # not _include'd OperationOutcomes
                yield resource

    def _pages(self, response: requests.Response, step: str) -> Iterator[dict[str, Any]]:
        while True:
            bundle = response.json()
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource")
                if isinstance(resource, dict) and resource.get("resourceType"):
                    yield resource
            following = next(
                (link.get("url") for link in bundle.get("link") or []
                 if link.get("relation") == "next"),
                None,
            )  # fmt: skip
            if not following or not str(following).startswith(self.base + "/"):
                return
            response = self._get(str(following), None, step)
            self._ok(response, step)

    def _get(self, url: str, params: dict[str, str] | None, step: str) -> requests.Response:
        try:
            return self.session.get(url, params=params, headers=ACCEPT)
        except (requests.RequestException, OSError) as exc:
            raise SourceUnavailable(detail=f"FHIR {step} failed ({type(exc).__name__})") from None

    @staticmethod
    def _ok(response: requests.Response, step: str) -> None:
        if response.status_code >= 500 or response.status_code == 429:
            raise SourceUnavailable(detail=f"FHIR {step}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise SourceUnavailable(
                ReasonCode.SOURCE_REFUSED, f"FHIR {step}: HTTP {response.status_code}"
            )

    def close(self) -> None:
        self.session.close()


def _add(resources: dict[tuple[str, str], dict[str, Any]], resource: dict[str, Any]) -> None:
    key = (str(resource.get("resourceType")), str(resource.get("id")))
    resources.setdefault(key, resource)


def medical_record_number(patient: dict[str, Any], systems: Sequence[str]) -> str | None:
    """The Patient's MRN for the DICOM query of a Group member named by reference: an
    identifier in one of ``systems``, else the one typed MR, else None."""
    identifiers = [i for i in patient.get("identifier") or [] if isinstance(i, dict)]
    for identifier in identifiers:
        if identifier.get("system") in systems and identifier.get("value"):
            return str(identifier["value"])
    for identifier in identifiers:
        codes = {c.get("code") for c in (identifier.get("type") or {}).get("coding") or []}
        if MR_CODE in codes and identifier.get("value"):
            return str(identifier["value"])
    return None
