"""What a worker pays beyond the pipeline: claim, settle, vault, manifests, spool removal.

    python benchmarks/worker_overhead.py [--files 500] [--batch 10] [--database sqlite|postgresql]

In one process, on the ``_corpus.py`` corpus, profile ``basic``, alternating in chunks of 50 so
that the machine's drift hits both sides alike:

* **runner**: ``Runner.run`` on each file, which is what the CLI does per file;
* **accept**: ``JobService.accept`` of requests of 5 instances (spool, fsync, rows), which is
  what the intake does per request besides HTTP;
* **process**: ``JobService.process_batch`` over those items in batches of ``--batch`` ids,
  which is what a Celery worker does per message (without Celery's own part).

It prints CPU and wall milliseconds per item for each, ``process / runner``, and the parts of
``process`` outside ``Runner.run`` (timed by wrapping each method). PostgreSQL is a fresh
database on 127.0.0.1:5432, dropped afterwards.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import build_corpus

TEST_KEY = "benchmark-test-key-not-a-secret-0123456"
CHUNK = 50
PARTS = ("_claim", "_job_of", "_commit", "_record_issued", "_manifest_if_done", "_write_manifest",
         "_remove_payload", "locate")


class Timers:
    """CPU and wall seconds per wrapped method (nested calls counted in their own line too)."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])

    def wrap(self, owner: Any, name: str, label: str | None = None) -> None:
        method = getattr(owner, name)
        key = label or name

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                line = self.seconds[key]
                line[0] += time.process_time() - cpu
                line[1] += time.perf_counter() - wall

        setattr(owner, name, timed)


def database_url(kind: str, root: Path) -> tuple[str, Callable[[], None]]:
    if kind == "sqlite":
        return f"sqlite:///{root / 'gateway.db'}", lambda: None
    import psycopg

    name = f"deid_overhead_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--batch", type=int, default=10, help="ids per process_batch (per message)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="postgresql")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    work = Path(tempfile.mkdtemp(prefix="deid-worker-overhead-"))
    os.environ.update(DEID_GATEWAY_KEY=TEST_KEY, DEID_GATEWAY_KEY_DIR=str(work / "keys"))

    from gateway.config import load_config
    from gateway.persistence.models import Kind
    from gateway.pipeline.dispatch import no_dispatch
    from gateway.pipeline.jobs import JobService
    from gateway.pipeline.payload import Payload, PayloadKind
    from gateway.pipeline.runner import Runner
    from gateway.service import build_gateway

    files = build_corpus(work / "corpus", args.files + 20).files
    warm, files = files[-20:], files[: args.files]
    drops = []

    def gateway(tag: str) -> Any:
        url, drop = database_url(args.database, work)
        drops.append(drop)
        config = load_config(data_dir=work / tag, database_url=url, workers=0,
                             destinations={"default": {"profile": "basic"}})
        return build_gateway(config, dispatch=no_dispatch)

    try:
        alone, service = gateway("runner"), gateway("service")
        runner, jobs = alone.jobs.runners["default"], service.jobs
        for path in warm:  # imports, first profile use, the vault's first rows
            runner.run(Payload(PayloadKind.DICOM, path.name, path=path, name=path.name))
        ids: list[str] = []
        for start in range(0, len(warm), 5):
            data = [p.read_bytes() for p in warm[start:start + 5]]
            ids += jobs.accept("default", Kind.DICOM, "stow-rs", data).item_ids
        jobs.process_batch(ids)

        timers = Timers()
        for name in PARTS:
            timers.wrap(JobService, name)
        timers.wrap(Runner, "run", "Runner.run")
        sides = {"runner": [0.0, 0.0], "accept": [0.0, 0.0], "process": [0.0, 0.0]}

        def measure(side: str, work_: Callable[..., None], *args_: Any) -> None:
            cpu, wall = time.process_time(), time.perf_counter()
            work_(*args_)
            sides[side][0] += time.process_time() - cpu
            sides[side][1] += time.perf_counter() - wall

        def run_files(paths: list[Path]) -> None:
            for p in paths:
                runner.run(Payload(PayloadKind.DICOM, p.name, path=p, name=p.name))

        def accept_requests(data: list[bytes], into: list[str]) -> None:
            for i in range(0, len(data), 5):
                into.extend(jobs.accept("default", Kind.DICOM, "stow-rs", data[i:i + 5]).item_ids)

        def process_batches(ids: list[str]) -> None:
            for i in range(0, len(ids), args.batch):
                jobs.process_batch(ids[i:i + args.batch])

        for start in range(0, len(files), CHUNK):
            chunk = files[start:start + CHUNK]
            runner_seconds = list(timers.seconds["Runner.run"])
            measure("runner", run_files, chunk)
            timers.seconds["Runner.run"] = runner_seconds  # only the service's runs count below
            accepted: list[str] = []
            measure("accept", accept_requests, [p.read_bytes() for p in chunk], accepted)
            measure("process", process_batches, accepted)
        n = len(files)
        print(f"{n} files, batches of {args.batch}, {args.database}, CPU / wall ms per item:")
        for side, (cpu, wall) in sides.items():
            print(f"  {side:<8} {1000 * cpu / n:6.3f} / {1000 * wall / n:6.3f}")
        runner_cpu, runner_wall = sides["runner"]
        print(f"  process / runner: CPU {sides['process'][0] / runner_cpu:.2f}x, "
              f"wall {sides['process'][1] / runner_wall:.2f}x")
        print("the parts of process outside Runner.run:")
        for name in PARTS:
            cpu, wall = timers.seconds[name]
            print(f"  {name:<18} {1000 * cpu / n:6.3f} / {1000 * wall / n:6.3f}")
        for g in (alone, service):
            g.db.dispose()
        return 0
    finally:
        for drop in drops:
            drop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
