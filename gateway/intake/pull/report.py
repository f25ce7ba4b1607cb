"""The cohort report for the privacy officer, and the progress ``GET /exports/{id}`` shows:
counts, row numbers and reason codes read from the export's rows and its pipeline items.
Never an MRN, a UID or a name: entries are their row numbers in the cohort file."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import select

from gateway.persistence.db import Database
from gateway.persistence.models import (
    ExportEntry,
    ExportFetch,
    ExportRun,
    Item,
    ItemStatus,
    Kind,
)
from gateway.pipeline.jobs import WAITING

DELIVERED = (ItemStatus.FORWARDED, ItemStatus.DUPLICATE)  # a duplicate is in the store too


def export_report(db: Database, export_id: str) -> dict[str, Any] | None:
    """The export's counts so far (None: no such export). ``done`` once every entry is
    settled and nothing of it waits in the pipeline."""
    with db.session() as session:
        run = session.get(ExportRun, export_id)
        if run is None:
            return None
        entries = list(
            session.scalars(select(ExportEntry).where(ExportEntry.export_id == export_id))
        )
        fetches = list(
            session.scalars(select(ExportFetch).where(ExportFetch.export_id == export_id))
        )
        job_kind = {job: f.kind for f in fetches for job in f.job_ids}
        items = (
            session.execute(
                select(Item.job_id, Item.status, Item.reason, Item.resources).where(
                    Item.job_id.in_(list(job_kind))
                )
            ).all()
            if job_kind
            else []
        )
    statuses: dict[Kind, Counter[str]] = {Kind.DICOM: Counter(), Kind.FHIR: Counter()}
    quarantined: Counter[str] = Counter()
    job_ok: dict[str, bool] = defaultdict(lambda: True)
    resources_delivered = 0
    for job_id, status, reason, resources in items:
        kind = job_kind[job_id]
        statuses[kind][status.value] += 1
        job_ok[job_id] &= status in DELIVERED
        if status is ItemStatus.QUARANTINED:
            quarantined[reason or "unknown"] += 1
        if kind is Kind.FHIR and status in DELIVERED:
            resources_delivered += int(resources or 0)
    waiting = sum(n for c in statuses.values() for s, n in c.items() if ItemStatus(s) in WAITING)
    studies: dict[str, bool] = {}
    for fetch in fetches:
        if fetch.kind is Kind.DICOM and fetch.study_hash:
            ok = all(job_ok[j] for j in fetch.job_ids) and bool(fetch.job_ids)
            studies[fetch.study_hash] = studies.get(fetch.study_hash, True) and ok
    by_status: dict[str, list[int]] = defaultdict(list)
    failed = []
    for entry in sorted(entries, key=lambda e: e.row):
        by_status[entry.status].append(entry.row)
        if entry.status == "failed":
            failed.append({"row": entry.row, "reason": entry.reason, "detail": entry.detail})
    settled = len(by_status["found"]) + len(by_status["not-found"])
    dicom_fetches = [f for f in fetches if f.kind is Kind.DICOM]
    fhir_fetches = [f for f in fetches if f.kind is Kind.FHIR]
    return {
        **_summary(run, by_status, failed, settled, waiting),
        "dicom": {
            "routes": sorted({f.route for f in dicom_fetches}),
            "studies_fetched": len(studies),
            "studies_delivered": sum(studies.values()),
            "series_fetched": len(dicom_fetches),
            "instances_fetched": sum(f.items for f in dicom_fetches),
            "by_status": dict(statuses[Kind.DICOM]),  # instances
        },
        "fhir": {
            "routes": sorted({f.route for f in fhir_fetches}),
            "patients_fetched": len(fhir_fetches),
            "resources_fetched": sum(f.items for f in fhir_fetches),
            "resources_delivered": resources_delivered,
            "by_status": dict(statuses[Kind.FHIR]),  # resources
        },
        "in_pipeline": waiting,
        "quarantined_by_reason": dict(quarantined),
        "rows": _rows(entries, fetches),
    }


def _rows(entries: list[ExportEntry], fetches: list[ExportFetch]) -> list[dict[str, Any]]:
    """Per cohort entry (by row number): its status and what was fetched for it."""
    fetched: dict[int, Counter[str]] = defaultdict(Counter)
    studies: dict[int, set[str]] = defaultdict(set)
    for fetch in fetches:
        counts = fetched[fetch.row]
        if fetch.kind is Kind.DICOM:
            counts["series"] += 1
            counts["instances"] += fetch.items
            studies[fetch.row].add(fetch.study_hash or "")
        else:
            counts["resources"] += fetch.items
    return [
        {
            "row": entry.row,
            "status": entry.status,
            "studies": len(studies[entry.row]),
            "series": fetched[entry.row]["series"],
            "instances": fetched[entry.row]["instances"],
            "resources": fetched[entry.row]["resources"],
        }
        for entry in sorted(entries, key=lambda e: e.row)
    ]


def _summary(run: ExportRun, by_status: dict[str, list[int]], failed: list[dict[str, Any]],
             settled: int, waiting: int) -> dict[str, Any]:  # fmt: skip
    return {
        "id": run.id,
        "destination": run.destination,
        "status": run.status,
        "settings": run.settings,
        "done": settled == run.entries and waiting == 0,
        "entries": {
            "total": run.entries,
            "found": len(by_status["found"]),
            "not_found": len(by_status["not-found"]),
            "not_found_rows": by_status["not-found"],
            "failed": failed,
            "to_do": run.entries - settled,
        },
    }
