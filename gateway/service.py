"""The service core, without Flask: everything the intakes (HTTP, DIMSE) and the workers need,
built once from the configuration. The Flask app factory and the C-STORE listener both take a
:class:`Gateway`; building one starts no thread (workers start from the server's process hooks
or their own command)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config import ServiceConfig, load_config
from gateway.linkage.keys import KeyRing
from gateway.persistence.db import Database, private_dir
from gateway.pipeline.destinations import Destination, build_destinations
from gateway.pipeline.jobs import JobService
from gateway.pipeline.review import QuarantineReview
from gateway.pipeline.worker import WorkerPool
from gateway.quiet import silence_libraries


@dataclass
class Gateway:
    config: ServiceConfig
    db: Database
    destinations: dict[str, Destination]
    jobs: JobService
    review: QuarantineReview
    workers: WorkerPool | None = field(default=None)

    def start_workers(self) -> WorkerPool | None:
        """In-process pipeline workers (the embedded default); idempotent."""
        if self.workers is None and self.config.workers > 0:
            self.workers = WorkerPool(self.jobs, self.config.workers, self.config.poll_seconds)
            self.workers.start()
        return self.workers

    def stop_workers(self) -> None:
        if self.workers is not None:
            self.workers.stop()
            self.workers = None


def build_gateway(config: ServiceConfig | None = None) -> Gateway:
    """Database, keys, destinations (profiles compiled, fail closed) and the job service."""
    silence_libraries()
    config = config or load_config()
    private_dir(config.data_dir)
    db = Database(config.db_url)
    db.create_all()
    keyring = KeyRing(key_file=config.key_file)  # same key lookup as the CLI: same pseudonyms
    destinations = build_destinations(config, keyring)
    jobs = JobService(db, config, destinations)
    return Gateway(config, db, destinations, jobs, QuarantineReview(db, jobs))


def check_config(config: ServiceConfig) -> None:
    """Everything that would stop a worker from starting, checked once before the server binds:
    every destination's profile compiles and its key is found. Opens no database."""
    silence_libraries()
    build_destinations(config, KeyRing(key_file=config.key_file))
