"""Scale-out on real parts: ``serve`` receiving, two ``deid-gateway worker`` processes on
RabbitMQ, all state in PostgreSQL (a fresh vhost and database per test, ``broker_harness``).

* The pipeline-parity corpus (DICOM by STOW-RS and C-STORE, FHIR Bundle, NDJSON and REST, and
  one bad input of each kind) plus a bulk study arrives linked exactly as one process makes it
  (the CLI's output, which ``test_pipeline_parity`` shows equal to one ``serve``), through a
  kill -9 of one worker mid-run and a broker restart: every item forwarded or quarantined with
  the CLI's reason, nothing lost, nothing stored twice, nothing counted as a duplicate.
* ``deidentify --distributed`` gives byte-identical output to a local ``deidentify``, after
  its submitter was killed and the same command run again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from tests.broker_harness import broker_url, postgres_url, restart_broker  # noqa: F401
from tests.server_process import free_port
from tests.service_helpers import multipart
from tests.test_pipeline_parity import (
    _cli_run,
    _corpus,
    _cstore,
    _dicom_tree,
    _fhir_resources,
    _instances,
)
from tests.test_service_crash import GatewayProcess, cli, create_token, service_env, write_config

pytestmark = pytest.mark.slow

BULK = 100  # instances of one more study, so that a worker is killed mid-run
BULK_STUDY = "1.2.826.0.1.3680043.10.1234.85"


class Workers:
    """``deid-gateway worker`` processes, each in its own session (kill -9 takes its
    children too)."""

    def __init__(self, config: Path, env: dict[str, str], logs: Path) -> None:
        self.config, self.env, self.logs = config, env, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 1) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker-{len(self.procs)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [*cli(), "worker", "--config", str(self.config), "--concurrency", str(concurrency)],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)

    def logs_text(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(self.logs.glob("worker-*.log")))


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[list[Workers]]:
    made: list[Workers] = []
    try:
        yield made
    finally:
        for w in made:
            w.stop_all()


def _write_bulk(corpus_dir: Path) -> list[pydicom.Dataset]:
    bulk = _instances("CT_small.dcm", "Quillfeather^Ines", "PAR-400", BULK_STUDY, BULK)
    for n, ds in enumerate(bulk):
        ds.save_as(corpus_dir / f"bulk-{n:03d}.dcm", enforce_file_format=True)
    return bulk


def _stored(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.dcm")) if root.exists() else 0


def _metrics(url: str, headers: dict[str, str]) -> dict[str, float]:
    out = {}
    for line in requests.get(f"{url}/metrics", headers=headers, timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _wait_jobs(url: str, headers: dict[str, str], jobs: list[str], timeout: float, why: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = {j: requests.get(f"{url}/jobs/{j}", headers=headers, timeout=10).json() for j in jobs}
        if all(s["done"] for s in status.values()):
            return status
        time.sleep(0.3)
    raise AssertionError(f"jobs not done: {[s.get('counts') for s in status.values()]}\n{why()}")


def test_two_workers_link_as_one_process_through_a_worker_kill_and_a_broker_restart(
    tmp_path: Path, broker_url: str, postgres_url: str, workers: list[Workers],  # noqa: F811
) -> None:
    corpus_dir = tmp_path / "corpus"
    corpus = _corpus(corpus_dir)
    bulk = _write_bulk(corpus_dir)
    env = service_env(tmp_path / "home")
    cli_out = tmp_path / "cli-out"
    cli_reasons = _cli_run(corpus_dir, cli_out, env)  # one process: the reference
    assert cli_reasons == corpus["bad"]

    data_dir = tmp_path / "data"
    dimse_port = free_port()
    config = write_config(
        tmp_path / "gateway.yaml", data_dir, workers=0,
        database_url=postgres_url, queue={"broker_url": broker_url, "batch_size": 4},
        housekeeping_seconds=0.5, identity={"pending_seconds": 3},
        retry={"lease_seconds": 4, "first_delay_seconds": 0.2},
        destinations={"default": {"profile": "research"}},
        dimse={"enabled": True, "host": "127.0.0.1", "port": dimse_port, "ae_title": "DEIDGW"},
    )
    token = create_token(config, env)
    admin = {"Authorization": f"Bearer {create_token(config, env, 'admin')}"}
    headers = {"Authorization": f"Bearer {token}"}
    server = GatewayProcess(config, env, tmp_path / "serve.log").start()
    pool = Workers(config, env, tmp_path)
    workers.append(pool)
    victim = pool.start()
    pool.start()
    store = data_dir / "store" / "default"
    try:
        jobs: list[str] = []

        def post(path: str, body: bytes | str, content_type: str, expect: int) -> str:
            answer = requests.post(f"{server.url}{path}", data=body, timeout=60,
                                   headers={**headers, "Content-Type": content_type})
            assert answer.status_code == expect, answer.text
            return str(answer.headers["X-Job-Id"])

        for start in range(0, BULK, 5):  # the bulk first: the kill lands while it runs
            jobs.append(post("/dicomweb/studies", *multipart(bulk[start:start + 5]), 200))
        jobs.append(post("/dicomweb/studies", *multipart(corpus["stow"]), 200))
        _cstore(dimse_port, corpus["cstore"])
        fhir = "application/fhir+json"
        bundle_job = post("/fhir", json.dumps(corpus["bundle"]), fhir, 202)
        invalid_job = post("/fhir", json.dumps(corpus["invalid"]), fhir, 202)
        ndjson_job = post("/fhir", corpus["ndjson"], "application/fhir+ndjson", 202)
        orphan_job = post("/fhir/Observation", json.dumps(corpus["orphan"]), fhir, 202)
        truncated_job = post("/dicomweb/studies", *multipart([], [("application/dicom", corpus["truncated"])]), 200)

        deadline = time.monotonic() + 60
        while _stored(store) < 5:  # the workers are running the bulk
            assert time.monotonic() < deadline, pool.logs_text()
            time.sleep(0.02)
        pool.kill(victim)  # kill -9 mid-run: its message(s) go back to the queue
        stored_at_kill = _stored(store)
        assert stored_at_kill < BULK, "the bulk was done before the kill: raise BULK"
        restart_broker()  # every connection drops; the durable queue keeps the messages
        pool.start()  # a replacement, as an orchestrator would start one

        every = [*jobs, bundle_job, invalid_job, ndjson_job, orphan_job, truncated_job]
        status = _wait_jobs(server.url, headers, every, 180, lambda: pool.logs_text() + server.log_text()[-2000:])
        seen = _metrics(server.url, admin)
    finally:
        server.kill()
        pool.stop_all()

    # every item ended forwarded or quarantined: nothing counted twice, nothing lost
    for job in jobs:
        assert set(status[job]["counts"]) == {"forwarded"}, status[job]
    service_reasons = {
        "truncated.dcm": status[truncated_job]["quarantined"][0]["reason"],
        "invalid-bundle.json": status[invalid_job]["quarantined"][0]["reason"],
        "orphan.json": status[orphan_job]["quarantined"][0]["reason"],
    }
    assert service_reasons == {k: v for k, v in cli_reasons.items() if k != "notes.txt"}
    assert status[bundle_job]["quarantined"] == [] and status[ndjson_job]["quarantined"] == []

    # linked exactly as one process links them: byte-identical DICOM, the same FHIR
    cli_dicom, service_dicom = _dicom_tree(cli_out), _dicom_tree(store)
    assert len(cli_dicom) == len(corpus["stow"]) + len(corpus["cstore"]) + BULK
    assert sorted(cli_dicom) == sorted(service_dicom)
    assert [n for n in cli_dicom if cli_dicom[n] != service_dicom[n]] == []
    assert _fhir_resources(cli_out) == _fhir_resources(store)
    assert not list((data_dir / "spool").rglob("*.dcm")), "an original stayed in the spool"

    # operations: the queue and the workers are visible
    assert "deid_gateway_queue_messages" in seen
    assert seen["deid_gateway_workers"] >= 1


def test_a_distributed_bulk_run_is_byte_identical_to_a_local_run_and_resumes(
    tmp_path: Path, broker_url: str, postgres_url: str, workers: list[Workers],  # noqa: F811
) -> None:
    corpus_dir = tmp_path / "corpus"
    _corpus(corpus_dir)
    _write_bulk(corpus_dir)
    env = service_env(tmp_path / "home")
    local = tmp_path / "local"
    done = subprocess.run([*cli(), "deidentify", "--input", str(corpus_dir), "--output", str(local), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 1, done.stderr[-3000:]

    config = write_config(
        tmp_path / "gateway.yaml", tmp_path / "data", workers=0,
        database_url=postgres_url, queue={"broker_url": broker_url},
    )
    spread = tmp_path / "spread"
    command = [*cli(), "deidentify", "--input", str(corpus_dir), "--output", str(spread), "--quiet",
               "--distributed", "--config", str(config)]
    # no worker yet: the submitter records the run, publishes and waits; it is killed there
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    time.sleep(6)
    assert first.poll() is None, first.stderr.read() if first.stderr else ""
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)

    pool = Workers(config, env, tmp_path)
    workers.append(pool)
    pool.start(concurrency=2)
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert again.returncode == 1, again.stderr[-3000:] + pool.logs_text()
    assert "Traceback" not in again.stderr

    def tree(root: Path) -> dict[str, bytes]:
        """Every file's bytes; a quarantine record without its time (when, not what)."""
        out = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            if path.name.endswith(".reason.json"):
                record = json.loads(data)
                assert record.pop("quarantined_at")
                data = json.dumps(record, sort_keys=True).encode()
            out[str(path.relative_to(root))] = data
        return out

    for a, b in ((local, spread), (Path(f"{local}.quarantine"), Path(f"{spread}.quarantine"))):
        left, right = tree(a), tree(b)
        assert sorted(left) == sorted(right)
        assert [name for name in left if left[name] != right[name]] == [], "outputs differ"
    assert len([n for n in tree(spread) if n.endswith(".dcm")]) >= BULK
    summary = lambda text: [l for l in text.splitlines() if l.strip().startswith(("processed", "quarantined", "dropped"))]
    assert summary(again.stderr) == summary(done.stderr)

    # the broker vault: the workers sealed what they issued into the service database, the
    # same mappings the local run kept beside its output (issue 15)
    exports = {}
    for name, where in (("local", ["--database", f"sqlite:///{local}.vault.db"]),
                        ("spread", ["--config", str(config)])):
        out_dir = tmp_path / f"export-{name}"
        exported = subprocess.run([*cli(), "broker", "export", "--reason", "parity check", *where,
                                   "--output", str(out_dir)], capture_output=True, text=True,
                                  env=env, timeout=120, check=False)
        assert exported.returncode == 0, exported.stderr
        exports[name] = {f: sorted((out_dir / f).read_text().splitlines())
                         for f in ("uid_mapping.csv", "patid_mapping.csv")}
    assert exports["local"] == exports["spread"]
    assert len(exports["spread"]["uid_mapping.csv"]) > BULK
