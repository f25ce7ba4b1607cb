"""The app factory: everything is built once here (config, database, keys, destinations,
workers) and kept in ``app.extensions``; nothing is read at import time."""

from __future__ import annotations

import logging

from flask import Flask

from gateway.config import ServiceConfig, load_config
from gateway.intake.http import admin, dicomweb, fhir, ops, preview
from gateway.intake.http.context import EXTENSION, Gateway
from gateway.intake.http.errors import register_error_handlers
from gateway.linkage.keys import KeyRing
from gateway.persistence.db import Database
from gateway.pipeline.destinations import build_destinations
from gateway.pipeline.jobs import JobService
from gateway.pipeline.worker import WorkerPool
from gateway.quiet import silence_libraries


def create_app(config: ServiceConfig | None = None, *, start_workers: bool = True) -> Flask:
    silence_libraries()
    config = config or load_config()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(config.db_url)
    db.create_all()
    keyring = KeyRing(key_file=config.key_file)  # same key lookup as the CLI: same pseudonyms
    destinations = build_destinations(config, keyring)
    jobs = JobService(db, config, destinations)
    workers = None
    if start_workers and config.workers > 0:
        workers = WorkerPool(jobs, config.workers, config.poll_seconds)
        workers.start()

    app = Flask("deid_gateway")
    app.config["MAX_CONTENT_LENGTH"] = config.limits.max_request_bytes
    app.extensions[EXTENSION] = Gateway(config, db, destinations, jobs, workers)
    for blueprint in (ops.blueprint, dicomweb.blueprint, fhir.blueprint, preview.blueprint, admin.blueprint):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return app
