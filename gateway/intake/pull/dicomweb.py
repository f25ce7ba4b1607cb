"""The DICOMweb route (dicomweb-client): QIDO-RS finds an entry's studies and their series,
WADO-RS fetches a series. Every HTTP request goes through one rate-limited session."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from gateway.config import DicomwebSourceConfig
from gateway.intake.pull.cohort import CohortEntry
from gateway.intake.pull.limits import LimitedSession, RateLimiter
from gateway.intake.pull.pacs import (
    SeriesRef,
    SourceUnavailable,
    StudyFilter,
    StudyRef,
    keep_series,
    matches,
)

#: the instances as the PACS holds them: no transcoding there (the pipeline decodes what it must)
AS_STORED = (("application/dicom", "*"),)
STUDY_FIELDS = ("PatientID", "IssuerOfPatientID", "AccessionNumber", "StudyInstanceUID")


def _value(attributes: dict[str, Any], tag: str) -> str | None:
    """A DICOM JSON attribute's first value as text (None when absent or empty)."""
    values = (attributes.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else None


class DicomwebPacs:
    route = "qido-wado"

    def __init__(self, config: DicomwebSourceConfig, limiter: RateLimiter | None = None) -> None:
        self.session = LimitedSession(
            limiter or RateLimiter(config.requests_per_second),
            config.token_env,
            config.timeout_seconds,
        )
        self.client = DICOMwebClient(config.url.rstrip("/"), session=self.session)

    def find_studies(self, entry: CohortEntry, filters: StudyFilter) -> list[StudyRef]:
        search: dict[str, Any] = {}
        for keyword, value in (
            ("PatientID", entry.mrn),
            ("AccessionNumber", entry.accession),
            ("StudyInstanceUID", entry.study_uid),
            ("StudyDate", filters.date_range),
        ):
            if value:
                search[keyword] = value
        try:
            found = self.client.search_for_studies(
                search_filters=search, fields=STUDY_FIELDS, get_remaining=True
            )
        except (requests.RequestException, OSError) as exc:
            raise SourceUnavailable(detail=f"QIDO-RS study search failed ({_why(exc)})") from None
        studies = []
        for attributes in found:
            study_uid = _value(attributes, "0020000D")
            patient_id = _value(attributes, "00100020")
            issuer = _value(attributes, "00100021")
            accession = _value(attributes, "00080050")
            if study_uid and matches(entry, patient_id, issuer, accession, study_uid):
                series = keep_series(self._series(study_uid), filters)
                if series:
                    studies.append(StudyRef(study_uid, patient_id, issuer, series))
        return studies

    def _series(self, study_uid: str) -> list[SeriesRef]:
        try:
            found = self.client.search_for_series(
                study_uid, fields=("Modality",), get_remaining=True
            )
        except (requests.RequestException, OSError) as exc:
            raise SourceUnavailable(detail=f"QIDO-RS series search failed ({_why(exc)})") from None
        refs = []
        for attributes in found:
            series_uid = _value(attributes, "0020000E")
            if series_uid:
                refs.append(SeriesRef(study_uid, series_uid, _value(attributes, "00080060")))
        return refs

    def fetch_series(self, series: SeriesRef) -> Iterator[bytes]:
        """One WADO-RS request per series; instances as Part 10 bytes, streamed."""
        try:
            for dataset in self.client.iter_series(
                series.study_uid, series.series_uid, media_types=AS_STORED
            ):
                buffer = io.BytesIO()
                pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
                yield buffer.getvalue()
        except (requests.RequestException, OSError) as exc:
            raise SourceUnavailable(
                detail=f"WADO-RS series retrieve failed ({_why(exc)})"
            ) from None

    def close(self) -> None:
        self.session.close()


def _why(exc: Exception) -> str:
    """The failure's class and HTTP status: never its message (a URL names UIDs)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return f"{type(exc).__name__}{f' HTTP {status}' if status else ''}"
