"""Batch de-identification of files and folders (the CLI's job), over N processes.

Each worker builds its processor once (profile, rules, key, pixel stage); outputs depend only on
the input and the key, so any ``--jobs`` gives byte-identical results.
"""

from __future__ import annotations

import enum
import gc
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path

from gateway.dicom.reader import has_dicm_preamble, read_dicom
from gateway.errors import DeidError, DropError, ReasonCode
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.dicom_stages import DicomProcessor
from gateway.pipeline.quarantine import FolderQuarantine
from gateway.profiles.model import Profile
from gateway.quiet import silence_libraries
from gateway.stores.folder import FolderStore


class Status(str, enum.Enum):
    PROCESSED = "processed"
    DROPPED = "dropped"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class Outcome:
    source: str
    status: Status
    reason: ReasonCode | None = None
    detail: str = ""
    output: str | None = None
    text_counts: tuple[tuple[str, int], ...] = ()


@dataclass
class BatchSummary:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    text_counts: Counter[str] = field(default_factory=Counter)
    extra: dict[str, int] = field(default_factory=dict)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status is status)

    @property
    def quarantined(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is Status.QUARANTINED]


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


# -- worker side -----------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerConfig:
    profile: Profile
    output: Path
    quarantine: Path
    key_file: Path | None


_WORKER: tuple[DicomProcessor, FolderStore, FolderQuarantine] | None = None


def init_worker(config: WorkerConfig) -> None:
    global _WORKER
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    silence_libraries()
    linkage = Linkage.from_profile(config.profile, KeyRing(key_file=config.key_file))
    _WORKER = (
        DicomProcessor(config.profile, linkage),
        FolderStore(config.output),
        FolderQuarantine(config.quarantine),
    )
    gc.freeze()  # what set-up built lives as long as the worker: out of every collection


def process_dicom_file(path: Path) -> Outcome:
    assert _WORKER is not None, "init_worker was not called"
    processor, store, quarantine = _WORKER
    try:
        ds = read_dicom(path)
        done = processor.process(ds)
        relpath = store.put_dicom(done.dataset)
        return Outcome(
            str(path),
            Status.PROCESSED,
            output=str(relpath),
            text_counts=tuple(sorted(done.result.text_counts.items())),
        )
    except DropError as exc:
        return Outcome(str(path), Status.DROPPED, exc.reason, exc.detail)
    except DeidError as exc:
        record = quarantine.put_file(path, exc.reason, exc.detail, exc.stage)
        return Outcome(str(path), Status.QUARANTINED, exc.reason, exc.detail, str(record.path))
    except Exception as exc:  # never crash the run, never forward: quarantine with a reason
        reason, detail = classify_exception(exc)
        record = quarantine.put_file(path, reason, detail, "deidentify")
        return Outcome(str(path), Status.QUARANTINED, reason, detail, str(record.path))


def classify_exception(exc: Exception) -> tuple[ReasonCode, str]:
    """Map a library exception to a reason without echoing its message (it may hold values)."""
    if isinstance(exc, (EOFError, OSError)) or "truncat" in type(exc).__name__.lower():
        return ReasonCode.TRUNCATED, f"read failed ({type(exc).__name__})"
    if isinstance(exc, (ValueError, UnicodeError, OverflowError)):
        return ReasonCode.UNDECODABLE_VALUE, f"a value cannot be processed ({type(exc).__name__})"
    return ReasonCode.INTERNAL_ERROR, f"unexpected failure ({type(exc).__name__})"


# -- driver side -----------------------------------------------------------------------------
def run_dicom_batch(
    files: list[Path],
    config: WorkerConfig,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    if not files:
        return []
    if jobs <= 1:
        init_worker(config)
        outcomes = []
        for path in files:
            outcomes.append(process_dicom_file(path))
            if progress:
                progress(1)
        return outcomes
    ctx = _pool_context()
    jobs = min(jobs, len(files))
    with ctx.Pool(jobs, initializer=init_worker, initargs=(config,)) as pool:
        outcomes = []
        chunk = max(1, min(32, len(files) // (jobs * 8) or 1))
        for outcome in pool.imap(process_dicom_file, files, chunksize=chunk):
            outcomes.append(outcome)
            if progress:
                progress(1)
        return outcomes


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
        ctx.set_forkserver_preload(["gateway.pipeline.batch"])
        return ctx
    return get_context("spawn")


def classify(path: Path) -> str:
    """'fhir' for FHIR JSON/NDJSON, else 'dicom': the DICOM reader gives bad input its reason
    (not DICOM, missing meta, truncated)."""
    try:
        if has_dicm_preamble(path):
            return "dicom"
    except OSError:
        return "dicom"
    try:
        from gateway.fhir.batch import looks_like_fhir
    except ImportError:
        return "dicom"
    return "fhir" if looks_like_fhir(path) else "dicom"


def timed() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
