"""The export job: every cohort entry found at the sources, fetched, and accepted into the
pipeline as pushed data is (:meth:`JobService.accept`), recorded in the database as it goes.

Resumable: the run's id is derived from the cohort file, the destination and the filters, so
the same export again finds its run. An entry already settled (found or not found) is not
asked for again; in an entry that was cut short, a series or a patient's resources already
accepted is not fetched again (an ``ExportFetch`` row says so, written right after the accept
made them durable). Only a fetch cut between its accept and its row is fetched twice; the
pipeline then records the repeated instances as duplicates and the store content is the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.errors import ConfigurationError, DeidError, IntakeUnavailable, ReasonCode
from gateway.intake.pull import lease
from gateway.intake.pull.cohort import Cohort, CohortEntry
from gateway.intake.pull.ehr import FhirEhr, medical_record_number
from gateway.intake.pull.pacs import (
    Pacs,
    RelayingPacs,
    SeriesRef,
    SourceUnavailable,
    StudyFilter,
    StudyRef,
)
from gateway.persistence.models import ExportEntry, ExportFetch, ExportRun, Kind, utcnow
from gateway.service import Gateway

log = logging.getLogger("deid_gateway.export")

CHUNK_INSTANCES = 32  # instances accepted as one pipeline job
CHUNK_BYTES = 64 * 1024 * 1024
BUSY_WAIT_SECONDS = 600.0  # how long an accept refused by back-pressure is retried
FHIR_CHANNEL = "pull-fhir"


class EntryStatus(str, Enum):
    FOUND = "found"
    NOT_FOUND = "not-found"
    FAILED = "failed"  # a source did not answer: asked again when the export runs again


class ExportStatus(str, Enum):
    RUNNING = "running"
    DONE = "done"
    INCOMPLETE = "incomplete"  # some entries failed; running the export again retries them
    FAILED = "failed"  # the run itself stopped (its thread's end); running it again resumes


SETTLED = (EntryStatus.FOUND.value, EntryStatus.NOT_FOUND.value)


@dataclass(frozen=True)
class ExportRequest:
    destination: str
    cohort: Cohort
    filters: StudyFilter = field(default_factory=StudyFilter)
    started_by: str | None = None  # token id (POST /exports)

    @property
    def export_id(self) -> str:
        identity = json.dumps([self.cohort.digest, self.destination, self.filters.settings()])
        return hashlib.sha256(identity.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class EntryResult:
    """What the terminal shows per entry: counts and reason codes, by row, never a value."""

    row: int
    status: EntryStatus
    studies: int = 0
    series: int = 0  # fetched by this run
    series_skipped: int = 0  # fetched before (a resumed export)
    instances: int = 0
    resources: int = 0
    reason: str | None = None
    detail: str | None = None  # the step that failed (value-free: protocol, type, status)

    def line(self, total: int) -> str:
        text = f"row {self.row}/{total}: {self.status.value}"
        if self.status is EntryStatus.FAILED:
            return (
                f"{text} ({self.reason}: {self.detail})"
                if self.detail
                else f"{text} ({self.reason})"
            )
        text += f", {self.studies} studies ({self.series} series, {self.instances} instances"
        if self.series_skipped:
            text += f"; {self.series_skipped} series fetched before"
        return f"{text}), {self.resources} resources"


Progress = Callable[[EntryResult], None]


class Exporter:
    """Runs :class:`ExportRequest` s against the gateway's configured sources."""

    def __init__(self, gateway: Gateway, pacs: Pacs | None, ehr: FhirEhr | None) -> None:
        if pacs is None and ehr is None:
            raise ConfigurationError(
                ReasonCode.CONFIGURATION_INVALID,
                "an export needs sources.pacs and/or sources.ehr in the configuration",
            )
        self.gateway = gateway
        self.pacs = pacs
        self.ehr = ehr
        sources = gateway.config.sources
        limits = [s.max_concurrent for s in (sources.pacs, sources.ehr) if s is not None]
        self.concurrency = min(limits) if limits else 1

    # -- the run ------------------------------------------------------------------------------
    def open(self, request: ExportRequest) -> str:
        """The run's row (created, or found again: resumed), leased to this process
        (:class:`~gateway.intake.pull.lease.ExportBusy` when another runs it); its status
        back to running."""
        if request.destination not in self.gateway.destinations:
            raise ConfigurationError(
                ReasonCode.UNKNOWN_DESTINATION, "--destination names no configured destination"
            )
        export_id = request.export_id
        try:
            with self.gateway.db.session() as session:
                if session.get(ExportRun, export_id) is None:
                    session.add(
                        ExportRun(
                            id=export_id,
                            destination=request.destination,
                            settings=request.filters.settings(),
                            entries=len(request.cohort.entries),
                            salt=os.urandom(32).hex(),
                            started_by=request.started_by,
                            status=ExportStatus.RUNNING.value,
                        )
                    )
        except IntegrityError:
            pass  # another process created it at the same moment: the lease decides
        lease.take(self.gateway.db, export_id)
        with self.gateway.db.session() as session:
            run = session.get(ExportRun, export_id)
            assert run is not None
            run.status = ExportStatus.RUNNING.value
            run.updated_at = utcnow()
        return export_id

    def settled_rows(self, export_id: str) -> set[int]:
        with self.gateway.db.session() as session:
            rows = session.scalars(
                select(ExportEntry.row).where(
                    ExportEntry.export_id == export_id, ExportEntry.status.in_(SETTLED)
                )
            )
            return set(rows)

    def run(self, request: ExportRequest, progress: Progress | None = None) -> str:
        """Every entry not settled yet, ``concurrency`` at a time; returns the export id."""
        export_id = self.open(request)
        done = self.settled_rows(export_id)
        todo = [e for e in request.cohort.entries if e.row not in done]
        run = _RunContext(export_id, request, self._salt(export_id))

        def one(entry: CohortEntry) -> EntryResult:
            result = self._entry(run, entry)
            if progress is not None:
                progress(result)
            return result

        try:
            with (
                lease.Renewer(self.gateway.db, export_id),
                ThreadPoolExecutor(max_workers=self.concurrency) as pool,
            ):
                results = list(pool.map(one, todo))
            failed = any(r.status is EntryStatus.FAILED for r in results)
            with self.gateway.db.session() as session:
                row = session.get(ExportRun, export_id)
                assert row is not None
                row.status = (ExportStatus.INCOMPLETE if failed else ExportStatus.DONE).value
                row.updated_at = utcnow()
        finally:
            lease.release(self.gateway.db, export_id)
        return export_id

    def _salt(self, export_id: str) -> bytes:
        with self.gateway.db.session() as session:
            run = session.get(ExportRun, export_id)
            assert run is not None
            return bytes.fromhex(run.salt)

    # -- one entry ----------------------------------------------------------------------------
    def _entry(self, run: _RunContext, entry: CohortEntry) -> EntryResult:
        try:
            result = self._fetch_entry(run, entry)
        except DeidError as exc:
            log.warning("export %s row %d failed: %s (%s)", run.export_id[:8], entry.row,
                        exc.reason.value, exc.detail)  # fmt: skip
            result = EntryResult(entry.row, EntryStatus.FAILED, reason=exc.reason.value,
                                 detail=exc.detail)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - one entry's failure must not end the export
            log.warning("export %s row %d failed: %s", run.export_id[:8], entry.row,
                        type(exc).__name__)  # fmt: skip
            result = EntryResult(entry.row, EntryStatus.FAILED,
                                 reason=ReasonCode.INTERNAL_ERROR.value,
                                 detail=type(exc).__name__)  # fmt: skip
        self._settle(run.export_id, result)
        return result

    def _fetch_entry(self, run: _RunContext, entry: CohortEntry) -> EntryResult:
        counts: dict[str, int] = dict.fromkeys(
            ("studies", "series", "series_skipped", "instances", "resources"), 0
        )
        patient: dict[str, Any] | None = None
        systems = self._systems(run.request.destination, entry)
        if self.ehr is not None and entry.patient_ref and not entry.has_dicom_key:
            patient = self.ehr.read(entry.patient_ref)
            if patient is not None:
                known = [s for s in systems if s]
                entry = replace(entry, mrn=medical_record_number(patient, known))
        studies: list[StudyRef] = []
        if self.pacs is not None and entry.has_dicom_key:
            studies = self.pacs.find_studies(entry, run.request.filters)
            counts["studies"] = len(studies)
            for study in studies:
                self._fetch_study(run, entry.row, study, counts)
        if self.ehr is not None and patient is None:
            patient = self._find_patient(entry, studies, systems)
        if self.ehr is not None and patient is not None:
            counts["resources"] = self._fetch_patient(run, entry.row, patient)
        found = bool(studies) or patient is not None
        status = EntryStatus.FOUND if found else EntryStatus.NOT_FOUND
        return EntryResult(
            entry.row,
            status,
            studies=counts["studies"],
            series=counts["series"],
            series_skipped=counts["series_skipped"],
            instances=counts["instances"],
            resources=counts["resources"],
        )

    def _systems(self, destination: str, entry: CohortEntry) -> list[str | None]:
        """FHIR identifier systems to search the MRN in: the Group's, else those of the
        profile's identity namespace that holds the DICOM issuer, else any system."""
        if entry.system:
            return [entry.system]
        identity = self.gateway.destinations[destination].profile.linkage.identity
        wanted = entry.issuer
        for namespace in identity.namespaces:
            holds = (
                wanted in namespace.dicom_issuers
                if wanted
                else namespace.name == identity.default_dicom_namespace
            )
            if holds and namespace.fhir_systems:
                return list(namespace.fhir_systems)
        return [None]

    def _find_patient(
        self, entry: CohortEntry, studies: Sequence[StudyRef], systems: list[str | None]
    ) -> dict[str, Any] | None:
        """By the entry's MRN, or (an accession or study UID only) the PatientID the PACS
        gave its studies. Exactly one Patient, or none: never a guess."""
        assert self.ehr is not None
        mrns = [entry.mrn] if entry.mrn else sorted({s.patient_id for s in studies if s.patient_id})
        if len(mrns) != 1:
            return None
        found = self.ehr.patients(mrns[0], systems)
        return found[0] if len(found) == 1 else None

    def _fetch_study(
        self, run: _RunContext, row: int, study: StudyRef, counts: dict[str, int]
    ) -> None:
        assert self.pacs is not None
        study_hash = run.ref(study.study_uid)
        for series in study.series:
            ref = run.ref(series.series_uid)
            if self._fetched(run.export_id, ref):
                counts["series_skipped"] += 1
                continue
            instances, job_ids = self._bring(run, series, ref)
            self._record(run, row, Kind.DICOM, ref, self.pacs.route, study_hash, instances,
                         job_ids)  # fmt: skip
            counts["series"] += 1
            counts["instances"] += instances

    def _bring(self, run: _RunContext, series: SeriesRef, ref: str) -> tuple[int, list[str]]:
        """The series into the pipeline: its instances accepted here, or (the service's
        C-MOVE) by the C-STORE intake the PACS moved them to; (instances, job ids)."""
        assert self.pacs is not None
        if isinstance(self.pacs, RelayingPacs) and self.pacs.relaying:
            return self.pacs.relay_series(series, run.export_id, ref)
        job_ids, instances = [], 0
        for chunk in _chunks(self.pacs.fetch_series(series)):
            job_ids.append(self._accept(run, Kind.DICOM, f"pull-{self.pacs.route}", chunk))
            instances += len(chunk)
        return instances, job_ids

    def _fetch_patient(self, run: _RunContext, row: int, patient: dict[str, Any]) -> int:
        """The Patient and everything of it, one resource per item (as a Bulk Data NDJSON
        push would be): a resource that cannot be made safe is quarantined alone, not with
        the patient's record. The Patient comes first; a resource the workers reach before
        it waits for it (``pending``), as pushed resources do."""
        assert self.ehr is not None
        ref = run.ref(f"Patient/{patient.get('id')}")
        if self._fetched(run.export_id, ref):
            return 0
        route, resources = self.ehr.everything(str(patient.get("id")))
        payloads = [json.dumps(r).encode() for r in (patient, *resources)]
        job_id = self._accept(run, Kind.FHIR, FHIR_CHANNEL, payloads)
        self._record(run, row, Kind.FHIR, ref, route.value, None, len(payloads), [job_id])
        return len(payloads)

    # -- the pipeline and the rows ------------------------------------------------------------
    def _accept(self, run: _RunContext, kind: Kind, channel: str, payloads: list[bytes]) -> str:
        """:meth:`JobService.accept`, the door pushed data comes through; refused for
        back-pressure it waits (a pull can slow down, a PACS is not hurried)."""
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            try:
                receipt = self.gateway.jobs.accept(
                    run.request.destination, kind, channel, payloads, run.request.started_by
                )
                return receipt.job_id
            except IntakeUnavailable as exc:
                if time.monotonic() > deadline:
                    raise
                time.sleep(min(exc.retry_after_seconds, 5))

    def _fetched(self, export_id: str, ref_hash: str) -> bool:
        with self.gateway.db.session() as session:
            return (
                session.scalar(
                    select(ExportFetch.id).where(
                        ExportFetch.export_id == export_id, ExportFetch.ref_hash == ref_hash
                    )
                )
                is not None
            )

    def _record(self, run: _RunContext, row: int, kind: Kind, ref_hash: str, route: str,
                study: str | None, items: int, job_ids: list[str]) -> None:  # fmt: skip
        with self.gateway.db.session() as session:
            session.add(
                ExportFetch(
                    export_id=run.export_id, row=row, kind=kind, ref_hash=ref_hash,
                    route=route, study_hash=study, items=items, job_ids=job_ids,
                )
            )  # fmt: skip

    def _settle(self, export_id: str, result: EntryResult) -> None:
        counts = {"studies": result.studies}
        with self.gateway.db.session() as session:
            entry = session.scalar(
                select(ExportEntry).where(
                    ExportEntry.export_id == export_id, ExportEntry.row == result.row
                )
            )
            if entry is None:
                entry = ExportEntry(export_id=export_id, row=result.row)
                session.add(entry)
            entry.status = result.status.value
            entry.reason = result.reason
            entry.detail = result.detail
            entry.counts = counts
            run = session.get(ExportRun, export_id)
            if run is not None:
                run.updated_at = utcnow()


@dataclass(frozen=True)
class _RunContext:
    export_id: str
    request: ExportRequest
    salt: bytes

    def ref(self, value: str) -> str:
        """Keyed with the run's salt: the row proves "fetched" without holding the UID."""
        return hmac.new(self.salt, value.encode(), hashlib.sha256).hexdigest()


def _chunks(instances: Iterable[bytes]) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for payload in instances:
        chunk.append(payload)
        size += len(payload)
        if len(chunk) >= CHUNK_INSTANCES or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def parse_date(text: str | None, option: str) -> dt.date | None:
    from gateway.errors import UsageError

    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(detail=f"{option} takes a date YYYY-MM-DD") from None


def parse_modalities(text: str | None) -> frozenset[str]:
    return frozenset(m.strip().upper() for m in (text or "").split(",") if m.strip())


__all__ = ["EntryResult", "EntryStatus", "ExportRequest", "ExportStatus", "Exporter",
           "SourceUnavailable"]  # fmt: skip
