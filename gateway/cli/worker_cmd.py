"""``deid-gateway worker``: pipeline worker processes on RabbitMQ (the scale-out engine)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from gateway.config import load_config
from gateway.errors import ConfigurationError, ReasonCode


def register(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="run pipeline workers that take items from RabbitMQ (needs queue.broker_url)",
        description=(
            "Run Celery worker processes for the items 'serve' receives and the files of "
            "'deidentify --distributed'. Every worker host needs the same configuration: the "
            "same database_url (PostgreSQL), the data folder mounted (data_dir: spool, "
            "quarantine, folder stores), the same pseudonymisation key. SIGTERM stops after "
            "the running tasks; a worker killed mid-task has its items run again elsewhere."
        ),
    )
    worker.add_argument("--config", type=Path, metavar="FILE", required=True)
    worker.add_argument("--data-dir", type=Path, metavar="DIR", help="overrides data_dir")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes, each taking messages itself; one that dies is started "
        "again (default: the number of CPUs)",
    )
    worker.add_argument(
        "--loglevel", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    worker.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    config = load_config(args.config, data_dir=args.data_dir)
    if config.queue is None:
        raise ConfigurationError(
            ReasonCode.CONFIGURATION_INVALID,
            f"{args.config}: 'deid-gateway worker' needs queue.broker_url in the configuration",
        )
    if args.concurrency < 1:
        raise ConfigurationError(ReasonCode.USAGE, "--concurrency must be at least 1")
    from gateway.service import check_config, check_signoffs

    destinations = check_config(config)  # profiles, key and sign-offs, before any message
    check_signoffs(config, {name: d.profile for name, d in destinations.items()})
    from gateway.workers.celery_worker import run_worker as run

    print(
        f"deid-gateway: {args.concurrency} worker process(es) on {config.queue.queue_name}",
        flush=True,
    )
    return run(config, args.concurrency, args.loglevel)
