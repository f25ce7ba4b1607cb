"""The service core, without Flask: everything the intakes (HTTP, DIMSE) and the workers need,
built once from the configuration. The Flask app factory and the C-STORE listener both take a
:class:`Gateway`; building one starts no thread (workers start from the server's process hooks
or their own command).

Two engines, one job service. Without ``queue`` in the configuration (the embedded default)
accepted ids go to an in-process queue and this process's worker threads run them. With
``queue.broker_url`` they are published to RabbitMQ and ``deid-gateway worker`` processes, on
any host that mounts the data folder and reaches the database, run them; ``serve`` then only
receives, and its housekeeper hands over what becomes due later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.broker.keys import load_broker_key
from gateway.broker.returns import check_returns
from gateway.broker.vault import Vault
from gateway.config import ServiceConfig, load_config
from gateway.errors import ConfigurationError, ReasonCode
from gateway.linkage.keys import KeyRing
from gateway.persistence.db import Database, private_dir
from gateway.persistence.profiles import signed_hashes
from gateway.pipeline.destinations import (
    Destination,
    build_destinations,
    compile_destination_profiles,
)
from gateway.pipeline.dispatch import Dispatch, LocalQueue
from gateway.pipeline.handover import BackgroundHandOver
from gateway.pipeline.jobs import JobService
from gateway.pipeline.review import QuarantineReview
from gateway.profiles.loader import resolve_profile_path
from gateway.profiles.model import Profile
from gateway.quiet import silence_libraries

#: where a web app keeps the service core (``app.extensions[EXTENSION]``)
EXTENSION = "deid_gateway"


@dataclass
class Gateway:
    config: ServiceConfig
    db: Database
    destinations: dict[str, Destination]
    jobs: JobService
    review: QuarantineReview
    celery: Any = None  # the Celery app when the configuration names a broker
    vault: Vault | None = None  # the honest broker's vault (None: every destination is off)
    workers: Any = field(default=None)  # what start_workers started (it has .stop())

    @property
    def distributed(self) -> bool:
        return self.config.queue is not None

    def start_workers(self) -> Any:
        """In-process pipeline workers (the embedded default), or with a broker only the
        housekeeper (the workers are ``deid-gateway worker`` processes); idempotent."""
        if self.workers is not None:
            return self.workers
        interval = self.config.housekeeping_seconds
        if self.distributed:
            from gateway.workers.housekeeping import Housekeeper

            self.workers = Housekeeper(self.jobs, interval)
            self.workers.start()
        elif self.config.workers > 0:
            from gateway.workers.local import WorkerPool

            assert isinstance(self.jobs.dispatch, LocalQueue)
            self.workers = WorkerPool(self.jobs, self.jobs.dispatch, self.config.workers, interval)
            self.workers.start()
        return self.workers

    def stop_workers(self) -> None:
        if self.workers is not None:
            self.workers.stop()
            self.workers = None


def build_gateway(config: ServiceConfig | None = None, dispatch: Dispatch | None = None) -> Gateway:
    """Database, keys, destinations (profiles compiled, fail closed) and the job service."""
    silence_libraries()
    config = config or load_config()
    private_dir(config.data_dir)
    db = Database(config.db_url)
    db.create_all()
    keyring = KeyRing(key_file=config.key_file)  # same key lookup as the CLI: same pseudonyms
    destinations = build_destinations(config, keyring)
    verify_signoffs(config, db, {name: d.profile for name, d in destinations.items()})
    vault = build_vault(config, db)
    jobs = JobService(db, config, destinations, dispatch or LocalQueue(), vault=vault)
    celery = None
    if config.queue is not None:
        from gateway.workers.celery_app import CeleryDispatch, make_celery

        celery = make_celery(config.queue)
        if dispatch is None:  # requests do not wait for the broker's confirmation
            publish = CeleryDispatch(celery, config.queue)
            jobs.dispatch = BackgroundHandOver(
                publish, jobs.mark_unqueued, config.queue.batch_size, config.queue.linger_seconds
            )
    gateway = Gateway(config, db, destinations, jobs, QuarantineReview(db, jobs), celery)
    gateway.vault = vault
    return gateway


def build_vault(config: ServiceConfig, db: Database) -> Vault | None:
    """The broker vault, when a destination keeps one (the default): its key is looked up at
    start-up, so a service whose broker key file cannot be read does not start."""
    if not any(d.vault for d in config.destinations.values()):
        return None
    return Vault(db, load_broker_key(config.broker_key_file))


def check_config(config: ServiceConfig) -> dict[str, Destination]:
    """Everything that would stop a worker from starting, checked once before the server binds:
    every destination's profile compiles and its key is found. Opens no database (see
    :func:`check_signoffs` for the check that does)."""
    silence_libraries()
    destinations = build_destinations(config, KeyRing(key_file=config.key_file))
    if any(d.vault for d in config.destinations.values()):
        load_broker_key(config.broker_key_file)  # fail closed: the vault must be writable
    check_returns(config)  # the clinical stores of results returned, as configured
    return destinations


def verify_signoffs(config: ServiceConfig, db: Database, profiles: Mapping[str, Profile]) -> None:
    """Fail closed: every destination that requires a sign-off runs a profile whose content
    hash is signed off in ``db``. Refusing to start (rather than warning or quarantining) keeps
    the privacy officer's decision explicit, and a file edited after its sign-off has another
    hash, so it must be signed again. One ConfigurationError names every such destination."""
    required = [name for name in config.destinations if config.requires_signoff(name)]
    if not required:
        return
    signed = signed_hashes(db, (profiles[name].content_hash for name in required))
    missing = [name for name in required if profiles[name].content_hash not in signed]
    if missing:
        raise ConfigurationError(
            ReasonCode.SIGNOFF_MISSING,
            "; ".join(_missing_signoff(config, name, profiles[name]) for name in missing),
        )


def check_signoffs(config: ServiceConfig, profiles: Mapping[str, Profile] | None = None) -> None:
    """:func:`verify_signoffs` before the server binds or a worker takes messages (opens the
    database; compiles the profiles unless given). Nothing required: the database is not
    opened."""
    if not any(config.requires_signoff(name) for name in config.destinations):
        return
    if profiles is None:
        profiles = {name: c.profile for name, c in compile_destination_profiles(config).items()}
    private_dir(config.data_dir)
    db = Database(config.db_url)
    try:
        db.create_all()
        verify_signoffs(config, db, profiles)
    finally:
        db.engine.dispose()


def _missing_signoff(config: ServiceConfig, name: str, profile: Profile) -> str:
    given = config.destinations[name].profile
    try:
        file = str(resolve_profile_path(given))
    except ConfigurationError:
        file = given
    return (
        f"destination '{name}' requires a sign-off of its profile {file} "
        f"(hash {profile.content_hash}) and there is none: run 'deid-gateway profile signoff "
        f"{given} --by NAME --statement TEXT [--config FILE]', or set require_signoff: false "
        f"for it"
    )
