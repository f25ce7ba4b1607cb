"""The directory intake spread over the Celery workers (``deidentify --distributed``).

The submitter lists the files, records a *run* in the service database (its settings: the
profile text, output, quarantine and key fingerprint) with one row per DICOM file, and
publishes the row ids; any worker, on any host that mounts the input and output folders,
runs each file through exactly the function a local run uses
(:func:`gateway.intake.directory.run_dicom_file`) and writes its value-free outcome to the
row. The submitter shows one progress bar from those rows, then does what a local run does
after its pool: settles colliding instances, runs the FHIR files (they need every Patient of
the run first, and are a small share of the bytes) and reports. Same function, same key:
byte-identical output.

Resumable: the run id is derived from the inputs, output, profile and key, so the same
command again finds its run and publishes only the files not done yet.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from gateway.broker.cli_vault import CLI_DESTINATION
from gateway.broker.vault import Vault
from gateway.config import ServiceConfig
from gateway.errors import ConfigurationError, ReasonCode
from gateway.intake import directory
from gateway.intake.directory import DicomRun, FileOutcome, RunAborted, RunConfig, RunSummary
from gateway.linkage.issued import Issued
from gateway.linkage.keys import KeyRing
from gateway.persistence.db import Database
from gateway.persistence.models import BulkFile, BulkRun
from gateway.pipeline.outcome import Outcome, Status
from gateway.pipeline.payload import PayloadKind
from gateway.profiles.compiler import compile_text
from gateway.profiles.problems import ProfileInvalid

FILES_PER_MESSAGE = 8
PROGRESS_SECONDS = 0.5
NO_WORKER_HINT_SECONDS = 30.0


def run_id_of(dicom: list[Path], config: RunConfig, profile_text: str, fingerprint: str) -> str:
    listing = hashlib.sha256("\n".join(str(p.resolve()) for p in dicom).encode()).hexdigest()
    identity = json.dumps(
        [
            listing,
            str(config.output.resolve()),
            str(config.quarantine.resolve()),
            hashlib.sha256(profile_text.encode()).hexdigest(),
            fingerprint,
        ]
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def run_distributed(
    inputs: list[Path],
    config: RunConfig,
    service: ServiceConfig,
    profile_source: tuple[str, str],
    progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """:func:`gateway.intake.directory.run_directory`, with the DICOM files run by the
    workers. ``profile_source``: the profile's text and file name (the workers compile it)."""
    if service.queue is None:
        raise ConfigurationError(
            ReasonCode.CONFIGURATION_INVALID,
            "--distributed needs a service configuration with queue.broker_url",
        )
    return directory.run_directory(
        inputs, config, 1, progress, on_the_workers(service, profile_source)
    )


def on_the_workers(service: ServiceConfig, profile_source: tuple[str, str]) -> DicomRun:
    """A :data:`~gateway.intake.directory.DicomRun` that records the run, publishes the files
    not done yet and waits for their outcomes."""
    assert service.queue is not None
    queue = service.queue

    def run(
        dicom: list[Path], config: RunConfig, _jobs: int, progress: Callable[[int], None] | None
    ) -> list[FileOutcome]:
        if not dicom:
            return []
        key = KeyRing(key_file=config.key_file).get(config.profile.linkage.key_id)
        text, filename = profile_source
        db = Database(service.db_url)
        db.create_all()
        run_id = run_id_of(dicom, config, text, key.fingerprint)
        file_ids = _record_run(db, run_id, dicom, config, text, filename, key.fingerprint)

        from gateway.workers.celery_app import BULK_TASK, CeleryDispatch, make_celery

        sender = CeleryDispatch(make_celery(queue), queue)
        todo = _not_done(db, run_id)
        try:
            for start in range(0, len(todo), FILES_PER_MESSAGE):
                sender.send(BULK_TASK, [run_id, todo[start : start + FILES_PER_MESSAGE]])
        except Exception as exc:  # noqa: BLE001 - kombu's errors: the run is recorded, resumable
            raise RunAborted(
                ReasonCode.INTERNAL_ERROR,
                f"the broker (queue.broker_url) cannot be reached ({type(exc).__name__}); "
                "run the same command again once it is up",
            ) from None
        _wait(db, run_id, len(file_ids), progress)
        return _outcomes(db, run_id, dicom)

    return run


def _record_run(
    db: Database,
    run_id: str,
    dicom: list[Path],
    config: RunConfig,
    text: str,
    filename: str,
    fingerprint: str,
) -> list[int]:
    with db.session() as session:
        run = session.get(BulkRun, run_id)
        if run is None:
            settings = {
                "profile_text": text,
                "profile_file": filename,
                "output": str(config.output.resolve()),
                "quarantine": str(config.quarantine.resolve()),
                "key_fingerprint": fingerprint,
                "vault": "1" if config.vault else "",  # workers seal what they issue
                "broker_fingerprint": config.vault_fingerprint,
            }
            session.add(BulkRun(id=run_id, settings=settings))
            session.flush()
            session.add_all(
                BulkFile(run_id=run_id, seq=seq, path=str(path.resolve()))
                for seq, path in enumerate(dicom)
            )
    with db.session() as session:
        return list(
            session.scalars(
                select(BulkFile.id).where(BulkFile.run_id == run_id).order_by(BulkFile.seq)
            )
        )


def _not_done(db: Database, run_id: str) -> list[int]:
    with db.session() as session:
        return list(
            session.scalars(
                select(BulkFile.id)
                .where(BulkFile.run_id == run_id, BulkFile.done.is_(False))
                .order_by(BulkFile.seq)
            )
        )


def _wait(db: Database, run_id: str, total: int, progress: Callable[[int], None] | None) -> None:
    """Until every file of the run has its outcome, moving the progress bar."""
    shown = 0
    last_change = time.monotonic()
    hinted = False
    while True:
        with db.session() as session:
            done = int(
                session.scalar(
                    select(func.count())
                    .select_from(BulkFile)
                    .where(BulkFile.run_id == run_id, BulkFile.done.is_(True))
                )
                or 0
            )
        if done > shown:
            if progress:
                progress(done - shown)
            shown = done
            last_change = time.monotonic()
        if done >= total:
            return
        if not hinted and time.monotonic() - last_change > NO_WORKER_HINT_SECONDS:
            print(
                "deid-gateway: waiting for workers (start one: deid-gateway worker --config FILE)",
                file=sys.stderr,
            )
            hinted = True
        time.sleep(PROGRESS_SECONDS)


def _outcomes(db: Database, run_id: str, dicom: list[Path]) -> list[FileOutcome]:
    with db.session() as session:
        rows = session.execute(
            select(BulkFile.seq, BulkFile.outcome)
            .where(BulkFile.run_id == run_id)
            .order_by(BulkFile.seq)
        ).all()
    outcomes = []
    for seq, data in rows:
        record: dict[str, Any] = dict(data or {})
        outcomes.append(
            FileOutcome(
                str(dicom[seq]),
                PayloadKind.DICOM,
                Outcome.from_json(record),
                record.get("quarantined_as"),
            )
        )
    return outcomes


# -- on the workers ---------------------------------------------------------------------------
_RUNS: dict[str, RunConfig | Outcome] = {}  # per worker process: the run set up, or why not


def _setup(
    db: Database, run_id: str, key_file: Path | None, vault: Vault | None
) -> RunConfig | Outcome:
    with db.session() as session:
        run = session.get(BulkRun, run_id)
        settings = dict(run.settings) if run is not None else {}
    if not settings:
        return Outcome(Status.RETRY, ReasonCode.CONFIGURATION_INVALID, "unknown run", "intake")
    try:
        profile = compile_text(settings["profile_text"], settings["profile_file"]).profile
    except ProfileInvalid:  # e.g. a parent file it extends is not mounted on this host
        return Outcome(
            Status.RETRY,
            ReasonCode.PROFILE_INVALID,
            "the run's profile does not compile on this worker (is every file it extends "
            "mounted here at the same path?)",
            "profile",
        )
    config = RunConfig(
        profile,
        Path(settings["output"]),
        Path(settings["quarantine"]),
        key_file,
        bool(settings.get("vault")),
    )
    key = KeyRing(key_file=key_file).get(profile.linkage.key_id)
    if key.fingerprint != settings["key_fingerprint"]:
        return Outcome(
            Status.RETRY,
            ReasonCode.KEY_MISSING,
            "this worker's pseudonymisation key is not the submitter's",
            "linkage",
        )
    if config.vault and (vault is None or vault.key.fingerprint != settings["broker_fingerprint"]):
        return Outcome(
            Status.RETRY,
            ReasonCode.KEY_MISSING,
            "this worker's broker key is not the submitter's: the vault rows would not open",
            "linkage",
        )
    directory.init_worker(config)
    return config


def run_bulk_files(
    db: Database,
    run_id: str,
    file_ids: list[int],
    key_file: Path | None,
    vault: Vault | None = None,
) -> int:
    """Run the files not done yet; their outcomes in one commit, with the vault rows of what
    they issued when the run keeps a vault (the service database's, under destination
    ``cli``: the outcome rows themselves stay value-free). Returns how many ran."""
    setup = _RUNS.get(run_id)
    if setup is None:
        _RUNS.clear()  # one run set up per process at a time (init_worker holds its runner)
        setup = _RUNS[run_id] = _setup(db, run_id, key_file, vault)
    with db.session() as session:
        rows = session.execute(
            select(BulkFile.id, BulkFile.path).where(
                BulkFile.id.in_(file_ids), BulkFile.done.is_(False)
            )
        ).all()
    results: list[tuple[int, dict[str, Any]]] = []
    issued: list[Issued] = []
    for file_id, path in rows:
        if isinstance(setup, Outcome):
            results.append((file_id, setup.to_json()))
            continue
        try:
            done = directory.run_dicom_file(Path(path))
        except RunAborted as exc:  # the quarantine cannot be written: the file waits
            done = FileOutcome(
                path, PayloadKind.DICOM, Outcome(Status.RETRY, exc.reason, exc.detail)
            )
        record = done.outcome.to_json()
        if done.quarantined_as:
            record["quarantined_as"] = done.quarantined_as
        results.append((file_id, record))
        if done.outcome.delivered or done.outcome.status is Status.DUPLICATE:
            issued.extend(done.outcome.issued)
    with db.session() as session:
        for file_id, record in results:
            session.execute(
                update(BulkFile).where(BulkFile.id == file_id).values(done=True, outcome=record)
            )
        if issued and vault is not None:  # (_setup refused the run's files without one)
            vault.record(session, CLI_DESTINATION, issued)
    return len(results)
