"""``deid-gateway export``: a cohort export by pull (gateway/intake/pull)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gateway.config import load_config
from gateway.errors import UsageError

EXIT_RUN_FAILED = 3
EXIT_QUARANTINED = 1
POLL_SECONDS = 0.5


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "export",
        help="export a cohort: find and fetch its studies (PACS) and resources (EHR), "
        "de-identified and linked into a destination",
        description=(
            "Find every entry of the cohort file at the configured sources (sources.pacs: "
            "DICOMweb QIDO-RS/WADO-RS or DIMSE C-FIND + C-GET/C-MOVE; sources.ehr: FHIR "
            "Patient by identifier, then Patient/$everything or per-type searches) and send "
            "what is found through the destination's pipeline, as if it had been pushed. The "
            "cohort file is CSV with a header naming any of mrn, issuer, accession, study_uid, "
            "or a FHIR Group. Resumable: the same command again continues where it stopped "
            "and fetches nothing twice that was already delivered. Progress and the cohort "
            "report name entries by row number, never an MRN. Exit status: 0 done, 1 some "
            "instances or resources quarantined, 2 usage or configuration error, 3 some "
            "entries failed (a source did not answer: run again), items still in the "
            "pipeline after --wait, or the export is running in another process."
        ),
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        required=True,
        help="service configuration: sources.pacs / sources.ehr, destinations, data_dir",
    )
    parser.add_argument("--destination", default="default", metavar="NAME", help="default: default")
    parser.add_argument(
        "--cohort",
        type=Path,
        metavar="FILE",
        required=True,
        help="CSV (mrn, issuer, accession, study_uid) or a FHIR Group (JSON)",
    )
    parser.add_argument("--since", metavar="DATE", help="studies on or after (YYYY-MM-DD)")
    parser.add_argument("--until", metavar="DATE", help="studies on or before (YYYY-MM-DD)")
    parser.add_argument(
        "--modalities", metavar="CT,MR", help="only series of these modalities (default: all)"
    )
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="overrides data_dir")
    parser.add_argument(
        "--report", type=Path, metavar="FILE", help="write the cohort report (JSON) here too"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the pipeline to deliver what was fetched (default: 600)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-entry lines")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from gateway.intake.pull.cohort import parse_cohort
    from gateway.intake.pull.export import (
        EntryResult,
        Exporter,
        ExportRequest,
        parse_date,
        parse_modalities,
    )
    from gateway.intake.pull.pacs import StudyFilter
    from gateway.intake.pull.report import export_report
    from gateway.intake.pull.sources import build_ehr, build_pacs
    from gateway.service import build_gateway

    config = load_config(args.config, data_dir=args.data_dir)
    try:
        data = args.cohort.read_bytes()
    except OSError as exc:
        raise UsageError(detail=f"cannot read {args.cohort} ({type(exc).__name__})") from None
    cohort = parse_cohort(data, str(args.cohort))
    filters = StudyFilter(
        parse_date(args.since, "--since"),
        parse_date(args.until, "--until"),
        parse_modalities(args.modalities),
    )
    request = ExportRequest(args.destination, cohort, filters)
    gateway = build_gateway(config)
    pacs, ehr = build_pacs(config), build_ehr(config)
    exporter = Exporter(gateway, pacs, ehr)
    total = len(cohort.entries)
    resumed = _known(gateway, request)
    before = exporter.settled_rows(request.export_id) if resumed else set()
    note = f" (resumed: {len(before)} done before)" if resumed else ""
    print(f"deid-gateway: export {request.export_id} of {total} entries{note}", file=sys.stderr)
    bar = _progress(total, len(before))
    lock = threading.Lock()

    def progress(result: EntryResult) -> None:
        with lock:
            if not args.quiet:
                line = result.line(total)
                (bar.write(line, file=sys.stderr) if bar else print(line, file=sys.stderr))
            if bar:
                bar.update(1)

    gateway.start_workers()
    try:
        export_id = exporter.run(request, progress)
        if bar:
            bar.close()
        report = _wait(gateway, export_id, args.wait, export_report)
    finally:
        gateway.stop_workers()
        for source in (pacs, ehr):
            if source is not None:
                source.close()
    _print(report)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2), encoding="utf-8")
    if report["entries"]["failed"] or report["in_pipeline"]:
        return EXIT_RUN_FAILED
    return EXIT_QUARANTINED if report["quarantined_by_reason"] else 0


def _known(gateway: Any, request: Any) -> bool:
    from gateway.persistence.models import ExportRun

    with gateway.db.session() as session:
        return session.get(ExportRun, request.export_id) is not None


def _wait(gateway: Any, export_id: str, seconds: float, report_of: Any) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        report: dict[str, Any] = report_of(gateway.db, export_id)
        if report["in_pipeline"] == 0 or time.monotonic() > deadline:
            return report
        time.sleep(POLL_SECONDS)


def _progress(total: int, initial: int) -> Any:
    if not sys.stderr.isatty() or total < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="entry", file=sys.stderr, dynamic_ncols=True)


def _print(report: dict[str, Any]) -> None:
    """The cohort report, for the privacy officer: counts, rows and reason codes."""
    entries, dicom, fhir = report["entries"], report["dicom"], report["fhir"]
    lines = [
        f"export {report['id']} -> {report['destination']}: {report['status']}",
        (
            f"  entries: {entries['total']} ({entries['found']} found, "
            f"{entries['not_found']} not found, {len(entries['failed'])} failed)"
        ),
    ]
    if entries["not_found_rows"]:
        lines.append(f"  not found: rows {', '.join(map(str, entries['not_found_rows']))}")
    for failed in entries["failed"]:
        lines.append(f"  failed: row {failed['row']} ({failed['reason']}: {failed['detail']})")
    lines.append(
        f"  DICOM: {dicom['studies_delivered']}/{dicom['studies_fetched']} studies delivered, "
        f"{dicom['instances_fetched']} instances fetched {_counts(dicom['by_status'])}"
    )
    lines.append(
        f"  FHIR: {fhir['patients_fetched']} patients, {fhir['resources_delivered']}/"
        f"{fhir['resources_fetched']} resources delivered {_counts(fhir['by_status'])}"
    )
    for reason, count in sorted(report["quarantined_by_reason"].items()):
        lines.append(f"  quarantined: {count} ({reason})")
    if report["in_pipeline"]:
        lines.append(f"  still in the pipeline: {report['in_pipeline']} (see GET /exports/ID)")
    print("\n".join(lines))


def _counts(counts: dict[str, int]) -> str:
    return "(" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")" if counts else ""
