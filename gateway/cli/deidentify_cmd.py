"""``deid-gateway deidentify``: de-identify files and folders (DICOM, and FHIR when present)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.broker.cli_vault import default_vault_url, open_vault, record_run
from gateway.broker.vault import Vault
from gateway.config import ServiceConfig, load_config
from gateway.dicom import conformance
from gateway.errors import UsageError
from gateway.intake.directory import RunConfig, RunSummary, iter_files, run_directory
from gateway.linkage.keys import KeyRing
from gateway.pipeline.outcome import Status
from gateway.pipeline.payload import PayloadKind
from gateway.profiles.compiler import compile_profile
from gateway.profiles.loader import DEFAULT_PROFILE, read_profile


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "deidentify",
        help="de-identify DICOM (and FHIR) files and folders into a research folder",
        description=(
            "De-identify every file under the given paths (recursed; DICOM recognised by "
            "content). Output layout: OUTPUT/<patient pseudonym>/<study uid>/<series uid>/"
            "<sop uid>.dcm; FHIR as OUTPUT/fhir/<ResourceType>/<part>.ndjson (the service's "
            "folder store layout). Files (and NDJSON lines) that cannot be made safe are "
            "copied to the quarantine folder with a .reason.json beside them. Exit status: 0 "
            "all processed, 1 some quarantined, 2 usage or configuration error, 3 the run "
            "could not go on (output or quarantine not writable)."
        ),
    )
    parser.add_argument("--input", "-i", nargs="+", required=True, type=Path, metavar="PATH")
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        metavar="NAME|FILE",
        help=f"profile name or YAML file (default: {DEFAULT_PROFILE})",
    )
    parser.add_argument(
        "--quarantine",
        type=Path,
        metavar="DIR",
        help="quarantine folder (default: OUTPUT.quarantine, beside the output, never inside)",
    )
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="worker processes")
    parser.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="pseudonymisation key file (default: $DEID_GATEWAY_KEY or the key directory)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-file lines")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="check every output and its input with dciodvfy (dicom3tools) and report how many "
        "outputs are less conformant than their input",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="run the DICOM files on the 'deid-gateway worker' processes of --config (RabbitMQ "
        "and a shared database; input and output folders mounted on every worker host); "
        "resumable: the same command again continues where it stopped. Output is "
        "byte-identical to a local run",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="service configuration (queue, database_url, key_file) for --distributed",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="the broker vault (pseudonym -> original, sealed with the broker key) in this "
        "database (default: sqlite file OUTPUT.vault.db beside the output, never inside; "
        "--distributed: the service database, where the workers record)",
    )
    parser.add_argument(
        "--no-vault",
        action="store_true",
        help="record nothing for the honest broker: nothing of this run can be re-identified "
        "or have results returned",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.input if not p.exists()]
    if missing:
        raise UsageError(detail=f"input not found: {', '.join(missing)}")
    if args.jobs < 1:
        raise UsageError(detail="--jobs must be at least 1")
    if args.validate:
        conformance.require()
    if args.distributed and args.config is None:
        raise UsageError(detail="--distributed needs --config FILE (with queue.broker_url)")
    service = load_config(args.config) if args.config is not None else None
    if service is not None and args.key_file is None:
        args.key_file = service.key_file
    profile = compile_profile(args.profile).profile  # every problem, before any file is read
    output: Path = args.output
    quarantine: Path = args.quarantine or output.with_name(output.name + ".quarantine")
    if quarantine.resolve().is_relative_to(output.resolve()):
        raise UsageError(detail="the quarantine must not be inside the output")
    # create/report the key once, up front, before any worker starts
    key = KeyRing(key_file=args.key_file).get(profile.linkage.key_id)
    vault = _vault(args, output, service)
    output.mkdir(parents=True, exist_ok=True)

    total = sum(1 for _ in iter_files(args.input))
    bar = _progress(total)
    config = RunConfig(
        profile,
        output,
        quarantine,
        args.key_file,
        vault is not None,
        vault.key.fingerprint if vault is not None else "",
    )
    try:
        if args.distributed:
            assert service is not None
            from gateway.intake.distributed import run_distributed

            source = read_profile(args.profile)
            summary = run_distributed(
                args.input, config, service, source, bar.update if bar else None
            )
        else:
            summary = run_directory(args.input, config, args.jobs, bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    if vault is not None:
        record_run(vault, (e for o in summary.outcomes for e in o.outcome.issued))
        vault.db.dispose()
    if args.validate:
        delivered = [
            (Path(o.source), output / o.outcome.refs[0])
            for o in summary.outcomes
            if o.kind is PayloadKind.DICOM and o.outcome.delivered and o.outcome.refs
        ]
        summary.extra["less_conformant"] = conformance.count_less_conformant(delivered, args.jobs)
    _report(summary, args, output, quarantine, profile.name, key.fingerprint)
    if summary.count(Status.RETRY):
        return EXIT_RUN_FAILED
    return 1 if summary.quarantined else 0


EXIT_RUN_FAILED = 3


def _vault(args: argparse.Namespace, output: Path, service: ServiceConfig | None) -> Vault | None:
    """The run's vault, opened before any file is read (a broker key that cannot be read
    stops the run up front, exit 2)."""
    if args.no_vault:
        return None
    if args.distributed and service is not None:
        if args.database:
            raise UsageError(detail="the vault of a --distributed run is the service database")
        return open_vault(service.db_url, service.broker_key_file)
    url = args.database or default_vault_url(output)
    return open_vault(url, service.broker_key_file if service is not None else None)


#: How the CLI names each status in its summary (the CLI contract's words).
SUMMARY_LABELS: dict[Status, str] = {
    Status.FORWARDED: "processed",
    Status.DROPPED: "dropped",
    Status.DUPLICATE: "duplicate",
    Status.QUARANTINED: "quarantined",
    Status.RETRY: "not written",
    Status.PENDING: "pending",
}


def _progress(total: int) -> Any:
    if not sys.stderr.isatty() or total < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True)


def _report(
    summary: RunSummary,
    args: argparse.Namespace,
    output: Path,
    quarantine: Path,
    profile_name: str,
    key_fingerprint: str,
) -> None:
    err = sys.stderr
    if not args.quiet:
        for item in summary.outcomes:
            outcome = item.outcome
            if outcome.status is not Status.FORWARDED:
                reason = outcome.reason.value if outcome.reason else "?"
                label = SUMMARY_LABELS[outcome.status]
                print(f"{item.source}: {label} ({reason}): {outcome.detail}", file=err)
    total = len(summary.outcomes)
    rate = total / summary.seconds if summary.seconds > 0 else 0.0
    by_reason: dict[Status, Counter[str]] = {s: Counter() for s in Status}
    for item in summary.outcomes:
        if item.outcome.reason:
            by_reason[item.outcome.status][item.outcome.reason.value] += 1
    print("deid-gateway summary", file=err)
    print(f"  profile      {profile_name} (key fingerprint {key_fingerprint})", file=err)
    for status in (
        Status.FORWARDED,
        Status.DROPPED,
        Status.DUPLICATE,
        Status.QUARANTINED,
        Status.RETRY,
    ):
        count = summary.count(status)
        if status in (Status.RETRY, Status.DUPLICATE) and not count:
            continue
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(by_reason[status].items()))
        line = f"  {SUMMARY_LABELS[status]:<12} {count}"
        print(line + (f"  ({reasons})" if reasons else ""), file=err)
    if summary.fhir_resources:
        print(f"  fhir resources {summary.fhir_resources}", file=err)
    for name, count in sorted(summary.undeclared().items()):
        print(
            f"  undeclared   {name} ({count} inputs): declare it in linkage.identity.namespaces "
            "to link these patients across DICOM and FHIR",
            file=err,
        )
    text_counts = summary.text_counts()
    if text_counts:
        spans = ", ".join(f"{k} {v}" for k, v in sorted(text_counts.items()))
        print(f"  text spans replaced: {spans}", file=err)
    if "less_conformant" in summary.extra:
        print(f"  less conformant  {summary.extra['less_conformant']}", file=err)
    print(f"  seconds      {summary.seconds:.2f}  ({rate:.1f} files/s, jobs {args.jobs})", file=err)
    print(f"  output       {output}", file=err)
    if summary.quarantined:
        print(f"  quarantine   {quarantine}", file=err)
