"""``deid-gateway deidentify``: de-identify files and folders (DICOM, and FHIR when present)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.errors import ConfigurationError, ReasonCode
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.batch import (
    BatchSummary,
    Outcome,
    Status,
    WorkerConfig,
    classify,
    iter_files,
    run_dicom_batch,
    timed,
)
from gateway.profiles.compiler import compile_profile
from gateway.profiles.loader import DEFAULT_PROFILE


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "deidentify",
        help="de-identify DICOM (and FHIR) files and folders into a research folder",
        description=(
            "De-identify every file under the given paths (recursed; DICOM recognised by "
            "content). Output layout: OUTPUT/<patient pseudonym>/<study uid>/<series uid>/"
            "<sop uid>.dcm; FHIR as OUTPUT/fhir/<ResourceType>.ndjson. Files that cannot be "
            "made safe are copied to the quarantine folder with a .reason.json beside them. "
            "Exit status: 0 all processed, 1 some quarantined, 2 usage or configuration error."
        ),
    )
    parser.add_argument("--input", "-i", nargs="+", required=True, type=Path, metavar="PATH")
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, metavar="NAME|FILE",
        help=f"profile name or YAML file (default: {DEFAULT_PROFILE})",
    )
    parser.add_argument(
        "--quarantine", type=Path, metavar="DIR",
        help="quarantine folder (default: OUTPUT.quarantine, beside the output, never inside)",
    )
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="worker processes")
    parser.add_argument(
        "--key-file", type=Path, metavar="FILE",
        help="pseudonymisation key file (default: $DEID_GATEWAY_KEY or the key directory)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-file lines")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.input if not p.exists()]
    if missing:
        raise ConfigurationError(ReasonCode.UNSUPPORTED_INPUT, f"input not found: {', '.join(missing)}")
    if args.jobs < 1:
        raise ConfigurationError(ReasonCode.UNSUPPORTED_INPUT, "--jobs must be at least 1")
    profile = compile_profile(args.profile).profile  # every problem, before any file is read
    output: Path = args.output
    quarantine: Path = args.quarantine or output.with_name(output.name + ".quarantine")
    if quarantine.resolve().is_relative_to(output.resolve()):
        raise ConfigurationError(ReasonCode.UNSUPPORTED_INPUT, "the quarantine must not be inside the output")
    key = KeyRing(key_file=args.key_file).get(profile.linkage.key_id)  # create/report the key once, up front
    linkage = Linkage(profile, key)
    output.mkdir(parents=True, exist_ok=True)

    files = list(iter_files(args.input))
    dicom_files: list[Path] = []
    fhir_files: list[Path] = []
    for path in files:
        (fhir_files if classify(path) == "fhir" else dicom_files).append(path)

    elapsed = timed()
    summary = BatchSummary()
    bar = _progress(len(files))
    config = WorkerConfig(profile, output, quarantine, args.key_file)
    summary.outcomes.extend(run_dicom_batch(dicom_files, config, args.jobs, bar.update if bar else None))
    if fhir_files:
        summary.outcomes.extend(_run_fhir(fhir_files, output, quarantine, profile, linkage, bar, summary))
    if bar:
        bar.close()
    summary.seconds = elapsed()
    for outcome in summary.outcomes:
        summary.text_counts.update(dict(outcome.text_counts))
    _report(summary, args, output, quarantine, profile.name, key.fingerprint)
    return 1 if summary.quarantined else 0


def _run_fhir(
    files: list[Path], output: Path, quarantine: Path, profile: Any, linkage: Linkage,
    bar: Any, summary: BatchSummary,
) -> list[Outcome]:
    from gateway.fhir.batch import run_fhir_batch

    result = run_fhir_batch(files, output, quarantine, profile, linkage, bar.update if bar else None)
    return fhir_outcomes(result, files, summary)


def fhir_outcomes(result: Any, files: list[Path], summary: BatchSummary) -> list[Outcome]:
    """Fold the FHIR batch summary into the run's outcomes: a whole file quarantined counts as
    that file; a bad NDJSON line counts as ``file:line`` beside the file's processed outcome."""
    outcomes: list[Outcome] = []
    records: dict[str, list[Any]] = {}
    for record in result.quarantine:
        records.setdefault(str(record.file), []).append(record)
    for path in files:
        found = records.get(str(path), [])
        if not any(r.line is None for r in found):
            outcomes.append(Outcome(str(path), Status.PROCESSED))
        for record in found:
            source = f"{path}:{record.line}" if record.line is not None else str(path)
            outcomes.append(Outcome(source, Status.QUARANTINED, ReasonCode(record.reason), record.detail))
    summary.text_counts.update(dict(result.spans))
    summary.extra["fhir_resources"] = int(result.processed)
    return outcomes


def _progress(total: int) -> Any:
    if not sys.stderr.isatty() or total < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True)


def _report(
    summary: BatchSummary, args: argparse.Namespace, output: Path, quarantine: Path,
    profile_name: str, key_fingerprint: str,
) -> None:
    err = sys.stderr
    if not args.quiet:
        for outcome in summary.outcomes:
            if outcome.status is not Status.PROCESSED:
                reason = outcome.reason.value if outcome.reason else "?"
                print(f"{outcome.source}: {outcome.status.value} ({reason}): {outcome.detail}", file=err)
    total = len(summary.outcomes)
    rate = total / summary.seconds if summary.seconds > 0 else 0.0
    by_reason: dict[Status, Counter[str]] = {s: Counter() for s in Status}
    for outcome in summary.outcomes:
        if outcome.reason:
            by_reason[outcome.status][outcome.reason.value] += 1
    print("deid-gateway summary", file=err)
    print(f"  profile      {profile_name} (key fingerprint {key_fingerprint})", file=err)
    for status in Status:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(by_reason[status].items()))
        line = f"  {status.value:<12} {summary.count(status)}"
        print(line + (f"  ({reasons})" if reasons else ""), file=err)
    if summary.extra.get("fhir_resources"):
        print(f"  fhir resources {summary.extra['fhir_resources']}", file=err)
    if summary.text_counts:
        spans = ", ".join(f"{k} {v}" for k, v in sorted(summary.text_counts.items()))
        print(f"  text spans replaced: {spans}", file=err)
    print(f"  seconds      {summary.seconds:.2f}  ({rate:.1f} files/s, jobs {args.jobs})", file=err)
    print(f"  output       {output}", file=err)
    if summary.quarantined:
        print(f"  quarantine   {quarantine}", file=err)
