"""Load on the service: STOW-RS into ``deid-gateway serve --processes N`` vs the CLI's files/s.

    python benchmarks/service_load.py [--files 400] [--processes 1 2] [--senders 4]
                                      [--per-request 5] [--workdir DIR] [--timeout 120] [--json]
                                      [--repeat K] [--queue-option KEY=VALUE ...]

``--engine celery`` runs the scale-out engine instead: ``serve`` (one process, intake only)
publishes to RabbitMQ (a fresh vhost on 127.0.0.1:5672) and ``deid-gateway worker
--concurrency N`` runs the pipeline, all state in a fresh PostgreSQL database
(127.0.0.1:5432). N is then the number of pipeline processes, as ``--jobs N`` is for the CLI.
``--rate R`` paces the senders at R instances/s (``--rate cli``: the CLI's measured files/s of
the same N) to measure the acknowledgement latency at that load. ``--repeat K`` runs the CLI and
the service K times each, alternating and ending with the CLI (each service run between two CLI
runs, compared with their mean), and reports the medians: on a machine whose speed drifts
between runs, one CLI run beside one service run can be off by a third either way.
``--queue-option`` sets the configuration's ``queue`` block (``batch_size=32``, ``prefetch=1``).

For each N in ``--processes`` (one fresh data dir each):

* start ``deid-gateway serve --processes N`` (gunicorn, gthread) on 127.0.0.1 with the
  ``basic`` profile, one pipeline worker thread per process (``workers: 1``), SQLite and the
  local folder store (the embedded default);
* warm up with one request and wait until it is forwarded (imports, first profile use);
* fire the corpus (``benchmarks/_corpus.py``: PHI-laden copies of pydicom's test files) as
  STOW-RS requests of ``--per-request`` instances from ``--senders`` threads (requests, one
  session per thread, every request counted);
* measure: accepted instances/s (from the first send to the last acknowledgement), ack latency
  per request (p50/p99: spool + fsync + row commit; the answer says "accepted", not "forwarded"),
  and drain: the time from the first send until ``/metrics`` shows a backlog of 0 and every
  instance forwarded (or quarantined) - the end-to-end files/s of the service;
* then time ``deid-gateway deidentify --profile basic --jobs N`` on the same corpus (wall
  clock, interpreter start-up included).

The servers are stopped (SIGTERM, then SIGKILL to the process group) in every case. The key is a
fixed 40-character test key; HOME is a folder in the work dir (gunicorn's control socket).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import build_corpus

TEST_KEY = "benchmark-test-key-not-a-secret-0123456"  # 40 characters, for benchmarks only
PROFILE = "basic"
START_TIMEOUT = 60.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cli() -> list[str]:
    script = shutil.which("deid-gateway")
    return [script] if script else [sys.executable, "-c", "import sys; from gateway.cli.main import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEID_GATEWAY_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(DEID_GATEWAY_KEY=TEST_KEY, DEID_GATEWAY_KEY_DIR=str(home / "keys"), HOME=str(home))
    return env


def multipart(payloads: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for payload in payloads:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), payload, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


# -- the service -------------------------------------------------------------------------------
def fresh_broker_and_database(name: str) -> tuple[str, str]:
    """A new RabbitMQ vhost and a new PostgreSQL database for one run."""
    import psycopg

    vhost = f"deid-bench-{name}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    database = vhost.replace("-", "_")
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    return (f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}")


def drop_broker_and_database(broker_url: str, database_url: str) -> None:
    """Remove what :func:`fresh_broker_and_database` made (best effort: a benchmark's leftovers)."""
    import psycopg

    subprocess.run(["rabbitmqctl", "delete_vhost", broker_url.rsplit("/", 1)[-1]], capture_output=True, check=False)
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database_url.rsplit("/", 1)[-1]}" WITH (FORCE)')


class Server:
    def __init__(self, root: Path, processes: int, threads: int, env: dict[str, str],
                 engine: str = "embedded", queue_options: dict[str, Any] | None = None) -> None:
        self.root = root
        self.processes = processes
        self.engine = engine
        self.env = env
        self.data = root / "data"
        self.config = root / "gateway.yaml"
        config: dict[str, Any] = {
            "data_dir": str(self.data),
            "workers": 1,
            "destinations": {"default": {"profile": PROFILE}},
        }
        if engine == "celery":
            broker, database = fresh_broker_and_database(f"n{processes}")
            config.update(workers=0, queue={"broker_url": broker, **(queue_options or {})},
                          database_url=database)
            self.broker_url, self.database_url = broker, database
        self.config.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        self.threads = threads
        if engine != "celery":
            self.database_url = ""
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.log = root / "serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, role: str) -> str:
        done = subprocess.run([*cli(), "token", "create", "--role", role, "--config", str(self.config)],
                              capture_output=True, text=True, env=self.env, timeout=120, check=True)
        return done.stdout.strip().splitlines()[-1]

    def start(self) -> None:
        intake_processes = 1 if self.engine == "celery" else self.processes
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*cli(), "serve", "--config", str(self.config), "--host", "127.0.0.1",
                 "--port", str(self.port), "--processes", str(intake_processes), "--threads", str(self.threads)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )
        if self.engine == "celery":
            self.start_worker()
        deadline = time.monotonic() + START_TIMEOUT
        ready = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text(errors='replace')[-2000:]}")
            try:
                ready = ready + 1 if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200 else 0
            except requests.RequestException:
                ready = 0
            if ready >= 3:
                return
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {START_TIMEOUT} s")

    def start_worker(self) -> None:
        with open(self.log, "ab") as out:
            self.worker = subprocess.Popen(
                [*cli(), "worker", "--config", str(self.config), "--concurrency", str(self.processes)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )

    def stop_worker(self) -> None:
        if self.worker is not None:
            stop_group(self.worker)
            self.worker = None

    def booted_workers(self) -> int:
        return len(re.findall(r"Booting worker", self.log.read_text(errors="replace")))

    def stop(self) -> None:
        for proc in (self.proc, self.worker):
            if proc is not None:
                stop_group(proc)
        self.proc = self.worker = None
        if self.database_url:
            drop_broker_and_database(self.broker_url, self.database_url)
            self.database_url = ""


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # any worker left behind
    except ProcessLookupError:
        pass


def cpu_seconds(groups: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) so far of each named process group, of PostgreSQL and
    RabbitMQ (by command name) and of this load generator, from /proc."""
    ticks = {name: 0 for name in (*groups, "postgres", "rabbitmq")}
    by_pgid = {pgid: name for name, pgid in groups.items()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, _, rest = (entry / "stat").read_text().rpartition(")")
            fields = rest.split()
        except OSError:
            continue
        comm = head.split("(", 1)[-1]
        used = int(fields[11]) + int(fields[12])
        name = by_pgid.get(int(fields[2]))
        if name is None and comm.startswith("postgres"):
            name = "postgres"
        if name is None and comm.startswith(("beam", "erl_child")):
            name = "rabbitmq"
        if name is not None:
            ticks[name] += used
    out = {name: t / os.sysconf("SC_CLK_TCK") for name, t in ticks.items()}
    mine = os.times()
    out["load generator"] = mine.user + mine.system
    return out


def metrics(url: str, headers: dict[str, str]) -> dict[str, float]:
    text = requests.get(f"{url}/metrics", headers=headers, timeout=30).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# -- one load run ------------------------------------------------------------------------------
@dataclass
class LoadResult:
    processes: int
    senders: int
    per_request: int
    instances: int
    requests: int
    accepted: int = 0
    failed_requests: int = 0
    forwarded: int = 0
    quarantined: int = 0
    ack_seconds: float = float("nan")
    drain_seconds: float = float("nan")
    latencies: list[float] = field(default_factory=list, repr=False)
    cli_seconds: float = float("nan")
    cli_processed: int = 0
    cli_after_seconds: float = float("nan")  # --repeat: the CLI run after this one
    engine: str = "embedded"
    rate: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds during the load, by process
    queue_options: dict[str, Any] = field(default_factory=dict)  # --queue-option
    backlog_first: bool = False
    worker_items: int = 0  # --backlog-first: items the workers ran from their first to the last
    worker_seconds: float = float("nan")
    worker_cpu: dict[str, float] = field(default_factory=dict)  # --backlog-first: CPU s in that window
    batches: int = 0  # celery: commits that settled the items (one per message run)

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.ack_seconds

    @property
    def forwarded_per_s(self) -> float:
        return (self.forwarded + self.quarantined) / self.drain_seconds

    @property
    def workers_per_s(self) -> float:
        return self.worker_items / self.worker_seconds

    @property
    def cli_files_per_s(self) -> float:
        """The CLI run before this one or, with ``--repeat``, the mean of the runs before and
        after it: the service's run is bracketed, so a drift of the machine's speed during
        the pair counts on both sides."""
        before = self.cli_processed / self.cli_seconds
        if self.cli_after_seconds != self.cli_after_seconds:  # NaN: no run after
            return before
        return (before + self.cli_processed / self.cli_after_seconds) / 2

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("latencies")
        data.update(
            accepted_per_s=self.accepted_per_s,
            forwarded_per_s=self.forwarded_per_s,
            cli_files_per_s=self.cli_files_per_s,
            workers_per_s=self.workers_per_s if self.backlog_first else None,
            ack_p50_ms=1000 * percentile(self.latencies, 50),
            ack_p99_ms=1000 * percentile(self.latencies, 99),
            ack_mean_ms=1000 * statistics.fmean(self.latencies) if self.latencies else float("nan"),
            ack_max_ms=1000 * max(self.latencies) if self.latencies else float("nan"),
            service_vs_cli=self.forwarded_per_s / self.cli_files_per_s if self.cli_seconds == self.cli_seconds else None,
        )
        return data


def run_load(root: Path, files: list[Path], processes: int, senders: int, per_request: int,
             timeout: float, env: dict[str, str], engine: str = "embedded",
             rate: float | None = None, backlog_first: bool = False,
             queue_options: dict[str, Any] | None = None) -> LoadResult:
    payloads = [p.read_bytes() for p in files]
    bodies = [multipart(payloads[i:i + per_request]) for i in range(0, len(payloads), per_request)]
    result = LoadResult(processes, senders, per_request, len(payloads), len(bodies), engine=engine,
                        rate=rate, backlog_first=backlog_first)
    server = Server(root, processes, max(4, senders), env, engine, queue_options)
    try:
        sender = {"Authorization": f"Bearer {server.token('sender')}"}
        admin = {"Authorization": f"Bearer {server.token('admin')}"}
        log(f"  serve --processes {processes}: starting")
        server.start()
        log(f"  serve --processes {processes}: ready ({server.booted_workers()} gunicorn workers)")
        warm, warm_type = multipart(payloads[:per_request])  # same instances: idempotent in the store
        response = requests.post(f"{server.url}/dicomweb/studies", data=warm, timeout=120,
                                 headers={**sender, "Content-Type": warm_type})
        response.raise_for_status()
        deadline = time.monotonic() + timeout
        while metrics(server.url, admin).get("deid_gateway_backlog", 1) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("warm-up not drained")
            time.sleep(0.1)
        base = metrics(server.url, admin)
        if backlog_first:  # the workers start once everything is accepted: their speed alone
            server.stop_worker()

        local = threading.local()
        lock = threading.Lock()
        last_ack = [0.0]

        def post(index: int) -> None:
            if rate:  # paced: request i leaves at t0 + i * per_request / rate
                time.sleep(max(0.0, t0 + index * per_request / rate - time.perf_counter()))
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            body, content_type = bodies[index]
            start = time.perf_counter()
            response = session.post(f"{server.url}/dicomweb/studies", data=body, timeout=120,
                                    headers={**sender, "Content-Type": content_type})
            elapsed = time.perf_counter() - start
            accepted = 0
            if response.status_code in (200, 202):
                accepted = len(response.json().get("00081199", {}).get("Value", []))
            with lock:
                result.latencies.append(elapsed)
                result.accepted += accepted
                result.failed_requests += response.status_code not in (200, 202)
                last_ack[0] = max(last_ack[0], time.perf_counter())

        groups = {"serve": server.proc.pid} if server.proc else {}
        if server.worker is not None:
            groups["worker"] = server.worker.pid
        cpu_before = cpu_seconds(groups)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=senders) as pool:
            futures = [pool.submit(post, i) for i in range(len(bodies))]
            done_sending = False
            while True:  # poll the drain while sending
                if not done_sending and all(f.done() for f in futures):
                    done_sending = True
                    for f in futures:
                        f.result()
                    result.ack_seconds = last_ack[0] - t0
                    log(f"  serve --processes {processes}: {result.accepted} accepted in {result.ack_seconds:.2f} s")
                    if backlog_first:
                        result.worker_items, result.worker_seconds, result.worker_cpu = drain_by_workers(
                            server, admin, base, result.accepted, timeout)
                        log(f"  worker --concurrency {processes}: {result.worker_items} items in "
                            f"{result.worker_seconds:.2f} s from the first to the last")
                now = metrics(server.url, admin)
                left = now.get("deid_gateway_backlog", 1)
                finished = now.get("deid_gateway_items_processed_total", 0) - base.get("deid_gateway_items_processed_total", 0)
                if done_sending and left == 0 and finished >= result.accepted:
                    result.drain_seconds = time.perf_counter() - t0
                    break
                if time.perf_counter() - t0 > timeout:
                    states = {k: v for k, v in now.items() if k.startswith("deid_gateway_items{")}
                    raise RuntimeError(f"not drained in {timeout} s (backlog {left}; {states}; "
                                       f"log: {server.log})")
                # /metrics costs the server queries: look rarely while sending, often after
                time.sleep(0.05 if done_sending else 0.5)
        cpu_after = cpu_seconds(groups)
        result.cpu = {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 3) for k in cpu_after}
        status = 'deid_gateway_items{status="%s"}'
        result.forwarded = int(now.get(status % "forwarded", 0) - base.get(status % "forwarded", 0))
        result.quarantined = int(now.get(status % "quarantined", 0) - base.get(status % "quarantined", 0))
        if server.database_url:
            result.batches = settled_batches(server.database_url)
        log(f"  serve --processes {processes}: drained in {result.drain_seconds:.2f} s "
            f"({result.forwarded} forwarded, {result.quarantined} quarantined"
            + (f", {result.batches} batches)" if result.batches else ")"))
    except BaseException:
        if server.database_url:
            log(f"  kept for a look: {server.database_url}")
            server.database_url = ""  # not dropped
        raise
    finally:
        server.stop()
    return result


def drain_by_workers(server: Server, admin: dict[str, str], base: dict[str, float], accepted: int,
                     timeout: float) -> tuple[int, float, dict[str, float]]:
    """Start the workers on a full backlog; (items run, seconds, CPU seconds by process) from the
    first batch settled to the last. The times are the rows' own (``updated_at`` of the settled
    items), so the workers' start-up is not counted and this side looks at ``/metrics`` only
    twice a second (each look costs the intake CPU the workers would otherwise have)."""
    processed = "deid_gateway_items_processed_total"
    started = time.time()
    server.start_worker()

    def groups() -> dict[str, int]:
        assert server.proc is not None and server.worker is not None
        return {"serve": server.proc.pid, "worker": server.worker.pid}

    deadline = time.monotonic() + timeout
    cpu_at_first: dict[str, float] | None = None
    while time.monotonic() < deadline:
        now = metrics(server.url, admin)
        done = now.get(processed, 0) - base.get(processed, 0)
        if cpu_at_first is None and done > 0:
            cpu_at_first = cpu_seconds(groups())
        if done >= accepted and now.get("deid_gateway_backlog", 1) == 0:
            cpu = cpu_seconds(groups())
            used = {k: round(v - (cpu_at_first or {}).get(k, 0.0), 3) for k, v in cpu.items()}
            items, seconds = settled_window(server.database_url, started)
            return items, seconds, used
        time.sleep(0.5)
    raise RuntimeError("the workers did not drain the backlog in time")


def settled_batches(database_url: str) -> int:
    """How many commits settled items: each batch's rows carry its commit's one timestamp."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(DISTINCT updated_at) FROM items WHERE status IN"
                           " ('FORWARDED', 'QUARANTINED', 'DROPPED', 'DUPLICATE')").fetchone()
    return int(row[0]) if row else 0


def settled_window(database_url: str, since: float) -> tuple[int, float]:
    """(items settled after the first batch, seconds from the first batch to the last), read
    from the items' rows: every batch settles its rows in one commit with one timestamp."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        stamps = [row[0] for row in conn.execute(
            "SELECT updated_at FROM items WHERE status IN ('FORWARDED', 'QUARANTINED', 'DROPPED',"
            " 'DUPLICATE') AND updated_at >= to_timestamp(%s) ORDER BY updated_at",
            (since,))]
    if len(stamps) < 2:
        return len(stamps), float("nan")
    first, last = stamps[0], stamps[-1]
    if os.environ.get("DEID_BENCH_TIMELINE"):  # items settled per half second, for a look
        slots = [0] * (int((last - first).total_seconds() * 2) + 1)
        for stamp in stamps:
            slots[int((stamp - first).total_seconds() * 2)] += 1
        log(f"  settled per 0.5 s: {slots}")
    return sum(1 for s in stamps if s > first), (last - first).total_seconds()


def run_cli(corpus: Path, out: Path, jobs: int, env: dict[str, str]) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [*cli(), "deidentify", "--input", str(corpus), "--output", str(out), "--profile", PROFILE,
         "--jobs", str(jobs), "--quiet"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    seconds = time.perf_counter() - start
    found = re.search(r"^\s*processed\s+(\d+)", proc.stderr, re.MULTILINE)
    if proc.returncode not in (0, 1) or not found:
        raise RuntimeError(f"deid-gateway deidentify failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return seconds, int(found.group(1))


def scaling(results: list[LoadResult]) -> list[str]:
    """Two processes against one, measured in this run: the workers alone (``--backlog-first``)
    beside the CLI's own ``--jobs 2`` / ``--jobs 1`` on the same files, which is what two
    processes can gain on this machine at all (medians with ``--repeat``)."""
    alone: dict[int, list[LoadResult]] = {}
    for r in results:
        if r.backlog_first:
            alone.setdefault(r.processes, []).append(r)
    if 1 not in alone or 2 not in alone:
        return []

    def median(n: int, rate: Callable[[LoadResult], float]) -> float:
        return statistics.median(rate(r) for r in alone[n])

    workers = median(2, lambda r: r.workers_per_s) / median(1, lambda r: r.workers_per_s)
    cli_gain = median(2, lambda r: r.cli_files_per_s) / median(1, lambda r: r.cli_files_per_s)
    return [f"  two workers / one: {workers:.2f}x; the CLI's --jobs 2 / --jobs 1: {cli_gain:.2f}x"]


def table(results: list[LoadResult]) -> str:
    header = (f"{'engine':>8} {'rate':>5} {'N':>2} {'instances':>9} {'req':>4} {'accepted/s':>10} {'ack p50 ms':>10} {'ack p99 ms':>10} "
              f"{'drain s':>8} {'service/s':>9} {'CLI s':>7} {'CLI files/s':>11} {'svc/CLI':>7}")
    lines = [header, "-" * len(header)]
    for r in results:
        d = r.as_dict()
        ratio = f"{d['service_vs_cli']:7.2f}" if d["service_vs_cli"] is not None else "      -"
        pace = f"{r.rate:5.0f}" if r.rate else "  max"
        lines.append(
            f"{r.engine:>8} {pace} {r.processes:>2} {r.accepted:>4}/{r.instances:<4} {r.requests:>4} {d['accepted_per_s']:>10.1f} "
            f"{d['ack_p50_ms']:>10.1f} {d['ack_p99_ms']:>10.1f} {r.drain_seconds:>8.2f} "
            f"{d['forwarded_per_s']:>9.1f} {r.cli_seconds:>7.2f} {d['cli_files_per_s']:>11.1f} {ratio}"
        )
    return "\n".join(lines)


def medians(results: list[LoadResult]) -> list[dict[str, Any]]:
    """Per engine and N: the median service and CLI rates over the repeats, and the median and
    range of the per-run ratios (each service run against the CLI runs around it: the figure
    to quote, since the medians of the rates may come from runs minutes apart)."""
    groups: dict[tuple[str, int], list[LoadResult]] = {}
    for r in results:
        groups.setdefault((r.engine, r.processes), []).append(r)
    out = []
    for (engine, processes), runs in groups.items():
        ratios = [r.forwarded_per_s / r.cli_files_per_s for r in runs]
        service = statistics.median(r.forwarded_per_s for r in runs)
        cli_rate = statistics.median(r.cli_files_per_s for r in runs)
        out.append({"engine": engine, "processes": processes, "runs": len(runs),
                    "service_per_s": service, "cli_per_s": cli_rate, "ratio": service / cli_rate,
                    "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                    "ack_p99_ms": statistics.median(r.as_dict()["ack_p99_ms"] for r in runs)})
        if all(r.backlog_first for r in runs):
            alone = statistics.median(r.workers_per_s for r in runs)
            out[-1].update(workers_per_s=alone,
                           workers_ratio=statistics.median(r.workers_per_s / r.cli_files_per_s
                                                           for r in runs),
                           workers_ratio_min=min(r.workers_per_s / r.cli_files_per_s for r in runs),
                           workers_ratio_max=max(r.workers_per_s / r.cli_files_per_s for r in runs))
    return out


def yaml_value(text: str) -> Any:
    """A command-line value as the configuration file would read it (numbers as numbers)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=400, help="corpus size (instances)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="gunicorn processes = CLI --jobs")
    parser.add_argument("--senders", type=int, default=4, help="client threads")
    parser.add_argument("--per-request", type=int, default=5, help="instances per STOW-RS request")
    parser.add_argument("--timeout", type=float, default=120.0, help="per run: warm-up, sending and drain")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder, removed afterwards")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--engine", choices=("embedded", "celery"), nargs="+", default=["embedded"],
                        help="embedded: serve --processes N runs the pipeline; celery: serve receives, "
                        "deid-gateway worker --concurrency N runs it (RabbitMQ + PostgreSQL)")
    parser.add_argument("--backlog-first", action="store_true",
                        help="celery: accept everything with no worker running, then start the workers "
                        "and time them alone (first to last item): the workers' scaling without the "
                        "intake competing for the same cores")
    parser.add_argument("--rate", default=None,
                        help="pace the senders: instances/s, or 'cli' for the CLI's files/s of the same N")
    parser.add_argument("--repeat", type=int, default=1,
                        help="service runs per N, each between two CLI runs (K+1 CLI runs); medians are reported")
    parser.add_argument("--queue-option", action="append", default=[], metavar="KEY=VALUE",
                        help="celery: a setting of the configuration's queue block (batch_size=32, "
                        "prefetch=1, linger_seconds=0.05); repeatable")
    args = parser.parse_args(argv)
    queue_options = {k: yaml_value(v) for k, _, v in (o.partition("=") for o in args.queue_option)}

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="deid-service-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        env = environment(workdir / "home")
        log(f"corpus: {args.files} files in {workdir / 'corpus'}")
        with warnings.catch_warnings():  # pydicom on the templates' own odd UIDs
            warnings.simplefilter("ignore")
            summary = build_corpus(workdir / "corpus", args.files)
        results = []
        for processes in args.processes:
            bracketed: list[LoadResult] = []  # the previous repeat's runs, waiting for a CLI after
            for repeat in range(args.repeat + (1 if args.repeat > 1 else 0)):
                # CLI, service, CLI, service, ..., CLI: each service run between two CLI runs
                log(f"  deid-gateway deidentify --jobs {processes}")
                cli_seconds, cli_processed = run_cli(summary.root, workdir / "cli-out", processes, env)
                for earlier in bracketed:
                    earlier.cli_after_seconds = cli_seconds
                bracketed = []
                if repeat == args.repeat:
                    break
                for engine in args.engine:
                    run_root = workdir / f"serve-{engine}-{processes}-{repeat}"
                    shutil.rmtree(run_root, ignore_errors=True)
                    run_root.mkdir(parents=True)
                    rate = None
                    if args.rate == "cli":
                        rate = cli_processed / cli_seconds
                    elif args.rate:
                        rate = float(args.rate)
                    result = run_load(run_root, summary.files, processes, args.senders,
                                      args.per_request, args.timeout, env, engine, rate,
                                      args.backlog_first and engine == "celery", queue_options)
                    result.queue_options = queue_options
                    result.cli_seconds, result.cli_processed = cli_seconds, cli_processed
                    results.append(result)
                    bracketed.append(result)
                    if args.repeat > 1:  # this run's own data dir is not needed again
                        shutil.rmtree(run_root, ignore_errors=True)
        report = {
            "corpus": {"files": len(summary.files), "bytes": summary.bytes, "patients": summary.patients,
                       "studies": summary.studies, "series": summary.series},
            "profile": PROFILE,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average": list(os.getloadavg())},
            "results": [r.as_dict() for r in results],
        }
        report["scaling"] = scaling(results)
        report["medians"] = medians(results)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"corpus {len(summary.files)} files ({summary.bytes / 1e6:.1f} MB), profile {PROFILE}, "
                  f"{args.senders} senders x {args.per_request} instances/request, {os.cpu_count()} CPUs, "
                  f"load {os.getloadavg()[0]:.1f}")
            print(table(results))
            for r in results:
                if r.backlog_first:
                    print(f"  workers alone, N={r.processes}: {r.workers_per_s:.1f} items/s "
                          f"({r.worker_items} items in {r.worker_seconds:.2f} s), "
                          f"{r.workers_per_s / r.cli_files_per_s:.2f}x the CLI's files/s; CPU s: "
                          + ", ".join(f"{k} {v:.2f}" for k, v in r.worker_cpu.items() if v))
            for line in scaling(results):
                print(line)
            if args.repeat > 1:
                print(f"medians of {args.repeat} service runs, each between two CLI runs:")
                for m in medians(results):
                    print(f"  {m['engine']:>8} N={m['processes']}: service {m['service_per_s']:.1f}/s, "
                          f"CLI {m['cli_per_s']:.1f}/s, service/CLI {m['ratio_median']:.2f} (runs "
                          f"{m['ratio_min']:.2f}-{m['ratio_max']:.2f}), ack p99 {m['ack_p99_ms']:.0f} ms"
                          + (f"; workers alone {m['workers_per_s']:.1f}/s, {m['workers_ratio']:.2f}x "
                             f"(runs {m['workers_ratio_min']:.2f}-{m['workers_ratio_max']:.2f})"
                             if "workers_per_s" in m else ""))
            print("CPU seconds during each load (send + drain), by process:")
            for r in results:
                parts = ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items() if v)
                print(f"  {r.engine:>8} N={r.processes} rate={'max' if not r.rate else round(r.rate)}: {parts}")
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
