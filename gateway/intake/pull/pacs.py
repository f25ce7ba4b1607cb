"""What an export asks of a PACS, whatever its protocol: find a cohort entry's studies (and
their series), then fetch a series as DICOM Part 10 bytes. The DICOMweb and DIMSE pullers
implement :class:`Pacs`; the export job only sees this."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gateway.errors import DeidError, ReasonCode
from gateway.intake.pull.cohort import CohortEntry


class SourceUnavailable(DeidError):
    """The PACS or the EHR did not answer (down, refused, timed out): the entry is retried
    when the export runs again. The detail names the protocol step, never a value."""

    http_status = 502
    default_reason = ReasonCode.SOURCE_UNAVAILABLE
    default_stage = "pull"


@dataclass(frozen=True)
class StudyFilter:
    """``--since`` / ``--until`` (StudyDate, inclusive) and ``--modalities`` (series level)."""

    since: dt.date | None = None
    until: dt.date | None = None
    modalities: frozenset[str] = field(default_factory=frozenset)

    @property
    def date_range(self) -> str | None:
        """DICOM range matching (PS3.4 C.2.2.2.5): ``YYYYMMDD-YYYYMMDD``, either side open."""
        if self.since is None and self.until is None:
            return None
        low = self.since.strftime("%Y%m%d") if self.since else ""
        high = self.until.strftime("%Y%m%d") if self.until else ""
        return f"{low}-{high}"

    def wants(self, modality: str | None) -> bool:
        return not self.modalities or (modality or "").upper() in self.modalities

    def settings(self) -> dict[str, str]:
        """Value-free, for the export's row (dates and modality codes are not PHI)."""
        return {
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "modalities": ",".join(sorted(self.modalities)),
        }


@dataclass(frozen=True)
class SeriesRef:
    study_uid: str
    series_uid: str
    modality: str | None = None


@dataclass(frozen=True)
class StudyRef:
    study_uid: str
    patient_id: str | None
    issuer: str | None
    series: tuple[SeriesRef, ...]


class Pacs(Protocol):
    route: str  # the job channel and the report's name for the route: qido-wado, c-get...

    def find_studies(self, entry: CohortEntry, filters: StudyFilter) -> list[StudyRef]: ...

    def fetch_series(self, series: SeriesRef) -> Iterator[bytes]: ...

    def close(self) -> None: ...


@runtime_checkable
class RelayingPacs(Protocol):
    """A PACS that delivers a series to the gateway's intake itself (C-MOVE to the service's
    own C-STORE listener): the export gets (instances, job ids), not the bytes."""

    relaying: bool

    def relay_series(
        self, series: SeriesRef, export_id: str, ref_hash: str
    ) -> tuple[int, list[str]]: ...


def matches(entry: CohortEntry, patient_id: str | None, issuer: str | None,
            accession: str | None, study_uid: str | None) -> bool:  # fmt: skip
    """A found study really is the entry's (a PACS may match loosely, wildcards, fuzzy
    names): nothing of a patient outside the cohort is fetched."""
    pairs = (
        (entry.mrn, patient_id),
        (entry.issuer, issuer),
        (entry.accession, accession),
        (entry.study_uid, study_uid),
    )
    return all(want is None or want == got for want, got in pairs)


def keep_series(series: Iterable[SeriesRef], filters: StudyFilter) -> tuple[SeriesRef, ...]:
    return tuple(s for s in series if filters.wants(s.modality))
