"""The directory intake (the CLI's ``deidentify``): files and folders fed to the one runner.

Files are recognised by content: DICOM (with or without a preamble) or FHIR (a resource, a
Bundle, Bulk Data NDJSON). DICOM files run in N processes, each with its own runner (built
once: profile, rules, key, pixel stage); outputs depend only on the input and the key, so any
``--jobs`` gives byte-identical results. FHIR runs in the parent after a first pass that reads
every Patient of the run, so order on disk does not matter; NDJSON is run line by line (a bad
line is quarantined alone) and the good lines of a chunk are written to the store together.

Everything goes through the same :class:`~gateway.stores.folder.FolderStore` the service
writes with, so a CLI output folder and a service folder store have one layout; what cannot be
made safe goes to a :class:`~gateway.pipeline.quarantine.FolderQuarantine` with its reason.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from gateway.dicom.reader import has_dicm_preamble
from gateway.errors import DeidError, ReasonCode
from gateway.fhir.resolver import InMemoryPatientIndex
from gateway.fhir.sniff import build_index, is_ndjson, looks_like_fhir
from gateway.intake.instances import collisions, dicom_payload, resolve
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.destinations import Destination
from gateway.pipeline.outcome import Outcome, Status
from gateway.pipeline.patients import RunDirectory
from gateway.pipeline.payload import Payload, PayloadKind
from gateway.pipeline.quarantine import FolderQuarantine
from gateway.pipeline.runner import Runner, outcome_of_error
from gateway.profiles.model import Profile
from gateway.quiet import silence_libraries
from gateway.stores.folder import BufferedFhirStore, FolderStore

NDJSON_CHUNK_LINES = 2000  # good lines written per store part: bounded memory, few files


class RunAborted(DeidError):
    """The run itself cannot go on (the output or the quarantine cannot be written)."""


@dataclass(frozen=True)
class FileOutcome:
    """One input (a file, or ``file:line`` of NDJSON) and what became of it."""

    source: str
    kind: PayloadKind
    outcome: Outcome
    quarantined_as: str | None = None


@dataclass
class RunSummary:
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)  # figures a command adds (--validate)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.outcome.status is status)

    @property
    def quarantined(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.outcome.status is Status.QUARANTINED]

    @property
    def fhir_resources(self) -> int:
        return sum(o.outcome.resources for o in self.outcomes if o.kind is PayloadKind.FHIR)

    def undeclared(self) -> dict[str, int]:
        """Register names no namespace declares -> inputs that named them."""
        counts: dict[str, int] = {}
        for item in self.outcomes:
            for name in item.outcome.undeclared:
                counts[name] = counts.get(name, 0) + 1
        return counts

    def text_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.outcomes:
            for entity, n in item.outcome.text_counts:
                counts[entity] = counts.get(entity, 0) + n
        return counts


@dataclass(frozen=True)
class RunConfig:
    profile: Profile
    output: Path
    quarantine: Path
    key_file: Path | None
    vault: bool = False  # outcomes carry what was issued, for the broker vault
    vault_fingerprint: str = ""  # the broker key's (a distributed run's workers must match)


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under the given paths, recursed, in a stable order (hidden files skipped)."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        elif path.is_file():
            yield path


def classify(path: Path) -> PayloadKind:
    """FHIR for FHIR JSON/NDJSON, else DICOM: the DICOM reader gives bad input its reason
    (not DICOM, truncated)."""
    try:
        if has_dicm_preamble(path):
            return PayloadKind.DICOM
    except OSError:
        return PayloadKind.DICOM
    return PayloadKind.FHIR if looks_like_fhir(path) else PayloadKind.DICOM


def build_destination(config: RunConfig, linkage: Linkage) -> Destination:
    store = FolderStore(config.output, name="folder:cli")
    destination = Destination.build("cli", config.profile, linkage, store, store, eager_fhir=False)
    destination.vault = config.vault
    return destination


# -- DICOM, in worker processes --------------------------------------------------------------
_WORKER: tuple[Runner, FolderQuarantine] | None = None


def init_worker(config: RunConfig) -> None:
    global _WORKER
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    silence_libraries()
    linkage = Linkage.from_profile(config.profile, KeyRing(key_file=config.key_file))
    index = InMemoryPatientIndex(linkage.identity)
    runner = Runner(build_destination(config, linkage), RunDirectory(index))
    _WORKER = (runner, FolderQuarantine(config.quarantine))
    gc.freeze()  # what set-up built lives as long as the worker: out of every collection


def settle(quarantine: FolderQuarantine, payload: Payload, outcome: Outcome) -> FileOutcome:
    """Keep what the runner refused; nothing else is written here."""
    if outcome.status is not Status.QUARANTINED:
        return FileOutcome(payload.source, payload.kind, outcome)
    try:
        record = quarantine.put(payload, outcome)
    except OSError as exc:
        raise RunAborted(
            ReasonCode.INTERNAL_ERROR, f"the quarantine cannot be written ({type(exc).__name__})"
        ) from None
    return FileOutcome(payload.source, payload.kind, outcome, str(record.path))


def run_dicom_file(path: Path) -> FileOutcome:
    assert _WORKER is not None, "init_worker was not called"
    runner, quarantine = _WORKER
    payload = Payload(PayloadKind.DICOM, str(path), path=path, name=path.name)
    return settle(quarantine, payload, runner.run(payload))


def run_dicom_files(
    files: list[Path],
    config: RunConfig,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[FileOutcome]:
    if not files:
        return []
    if jobs <= 1:
        init_worker(config)
        outcomes = []
        for path in files:
            outcomes.append(run_dicom_file(path))
            if progress:
                progress(1)
        return outcomes
    jobs = min(jobs, len(files))
    _preload_for_workers()
    with _pool_context().Pool(jobs, initializer=init_worker, initargs=(config,)) as pool:
        outcomes = []
        chunk = max(1, min(32, len(files) // (jobs * 8) or 1))
        for outcome in pool.imap(run_dicom_file, files, chunksize=chunk):
            outcomes.append(outcome)
            if progress:
                progress(1)
        return outcomes


def _preload_for_workers() -> None:
    """Tables every worker reads, loaded once in the parent so forked workers share them."""
    from gateway.dicom.iod import load_iod_table

    load_iod_table()


def _pool_context() -> BaseContext:
    """How worker processes start. On Linux, from a parent running one thread, ``fork``: the
    workers share the imports already made and start in milliseconds (a forkserver costs a
    fresh interpreter and the pipeline's imports, about 0.5 s, on every run). With other
    threads running, a fork could copy a lock held by one of them: a forkserver that has
    already imported the pipeline. Elsewhere, ``spawn``."""
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return get_context("fork")
    if os.name == "posix":
        ctx = get_context("forkserver")
        ctx.set_forkserver_preload(["gateway.intake.directory"])
        return ctx
    return get_context("spawn")


def settle_collisions(
    files: list[Path], outcomes: list[FileOutcome], config: RunConfig
) -> list[FileOutcome]:
    """Inputs that wrote the same output (one SOPInstanceUID): decided by content, in path
    order (``gateway.intake.instances``); nothing is done when there are none."""
    refs = [(i, o.outcome.refs[0]) for i, o in enumerate(outcomes) if o.outcome.delivered]
    groups = collisions(refs)
    if not groups:
        return outcomes
    linkage = Linkage.from_profile(config.profile, KeyRing(key_file=config.key_file))
    quarantine = FolderQuarantine(config.quarantine)

    def run_into(path: Path, root: Path) -> Outcome:
        scratch = RunConfig(config.profile, root, config.quarantine, config.key_file, config.vault)
        runner = Runner(
            build_destination(scratch, linkage),
            RunDirectory(InMemoryPatientIndex(linkage.identity)),
        )
        return runner.run(dicom_payload(path))

    settled = list(outcomes)
    for positions in groups.values():
        group = [(files[i], outcomes[i].outcome) for i in positions]
        for i, outcome in zip(positions, resolve(group, config.output, run_into), strict=True):
            settled[i] = settle(quarantine, dicom_payload(files[i]), outcome)
    return settled


# -- FHIR, in the parent ---------------------------------------------------------------------
class FhirFiles:
    """The FHIR side of a run: one runner over the run's patient directory."""

    def __init__(self, config: RunConfig, linkage: Linkage, files: list[Path]) -> None:
        self.store = BufferedFhirStore(FolderStore(config.output, name="folder:cli"))
        dest = build_destination(config, linkage)
        dest.fhir_store = self.store
        self.runner = Runner(dest, RunDirectory(build_index(files, linkage)))
        self.quarantine = FolderQuarantine(config.quarantine)

    def run_file(self, path: Path) -> list[FileOutcome]:
        if is_ndjson(path):
            return self._ndjson(path)
        payload = Payload(PayloadKind.FHIR, str(path), path=path, name=path.name)
        return self._flush([(payload, self.runner.run(payload))])

    def _ndjson(self, path: Path) -> list[FileOutcome]:
        out: list[FileOutcome] = []
        chunk: list[tuple[Payload, Outcome]] = []
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                payload = Payload(
                    PayloadKind.FHIR,
                    f"{path}:{number}",
                    data=raw,
                    name=f"{path.stem}.line{number}{path.suffix or '.ndjson'}",
                )
                chunk.append((payload, self.runner.run(payload)))
                if len(chunk) >= NDJSON_CHUNK_LINES:
                    out.extend(self._flush(chunk))
                    chunk = []
        out.extend(self._flush(chunk))
        return out

    def _flush(self, done: list[tuple[Payload, Outcome]]) -> list[FileOutcome]:
        """Write the buffered good resources; a store failure turns them into its outcome."""
        failure: Outcome | None = None
        try:
            self.store.flush()
        except Exception as exc:  # noqa: BLE001 - the store failed: those were not written
            failure = outcome_of_error(exc)
        results = []
        for payload, outcome in done:
            if failure is not None and outcome.status is Status.FORWARDED:
                outcome = failure
            if outcome.status is Status.PENDING:  # every Patient of the run was read first
                outcome = Outcome(
                    Status.QUARANTINED,
                    ReasonCode.UNRESOLVED_PATIENT,
                    "unresolved patient: the Patient is not in the input",
                    "identity",
                )
            results.append(settle(self.quarantine, payload, outcome))
        return results


#: How a run's DICOM files are run: here in N processes (:func:`run_dicom_files`), or on the
#: workers (:func:`gateway.intake.distributed.on_the_workers`); the rest of a run is the same.
DicomRun = Callable[[list[Path], RunConfig, int, Callable[[int], None] | None], list[FileOutcome]]


def run_directory(
    inputs: list[Path],
    config: RunConfig,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    run_dicom: DicomRun = run_dicom_files,
) -> RunSummary:
    """De-identify every file under ``inputs`` into ``config.output``."""
    started = time.perf_counter()
    files = list(iter_files(inputs))
    dicom: list[Path] = []
    fhir: list[Path] = []
    for path in files:
        (fhir if classify(path) is PayloadKind.FHIR else dicom).append(path)
    summary = RunSummary()
    summary.outcomes.extend(
        settle_collisions(dicom, run_dicom(dicom, config, jobs, progress), config)
    )
    if fhir:
        linkage = Linkage.from_profile(config.profile, KeyRing(key_file=config.key_file))
        run = FhirFiles(config, linkage, fhir)
        for path in fhir:
            summary.outcomes.extend(run.run_file(path))
            if progress:
                progress(1)
    summary.seconds = time.perf_counter() - started
    return summary


def describe(item: FileOutcome) -> dict[str, Any]:
    return {"source": item.source, **item.outcome.record()}
