"""What the app holds (built once by the factory) and how views reach it."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from gateway.config import ServiceConfig
from gateway.persistence.db import Database
from gateway.pipeline.destinations import Destination
from gateway.pipeline.jobs import JobService
from gateway.pipeline.worker import WorkerPool

EXTENSION = "deid_gateway"


@dataclass
class Gateway:
    config: ServiceConfig
    db: Database
    destinations: dict[str, Destination]
    jobs: JobService
    workers: WorkerPool | None


def gateway() -> Gateway:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
