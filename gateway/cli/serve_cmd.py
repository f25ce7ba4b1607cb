"""``deid-gateway serve`` and ``deid-gateway token create``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.config import ServiceConfig, load_config

ROLES = ("sender", "privacy-officer", "honest-broker", "admin", "partner")  # tokens.Role


def _config(args: argparse.Namespace) -> ServiceConfig:
    return load_config(args.config, data_dir=args.data_dir)


def register(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the gateway service (DICOMweb STOW-RS, FHIR REST, optional C-STORE; "
        "the privacy officer's pages at /workbench)",
        description=(
            "Serve on the embedded default: SQLite in DIR/gateway.db, spool DIR/spool, quarantine "
            "DIR/quarantine, research store DIR/store/<destination>/, in-process workers. "
            "STOW-RS at /dicomweb/studies, FHIR at /fhir (destination 'default'); other "
            "destinations at /d/<name>/dicomweb/studies and /d/<name>/fhir. With queue.broker_url "
            "in the configuration, serve only receives and publishes to RabbitMQ; "
            "'deid-gateway worker' processes run the pipeline."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="default ./deid-data or $DEID_GATEWAY_DATA_DIR"
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="service configuration YAML")
    serve.add_argument("--processes", type=int, default=1, help="gunicorn worker processes")
    serve.add_argument(
        "--threads", type=int, default=4, help="threads per process running complete requests"
    )
    serve.add_argument(
        "--worker-model",
        choices=("asgi", "gthread"),
        default="asgi",
        help="asgi (default): an event loop reads every request, a thread runs it once complete, "
        "so slow clients hold no thread; gthread: a thread per connection (slow clients can "
        "stall it)",
    )
    serve.set_defaults(handler=run_serve)

    token = commands.add_parser("token", help="manage bearer tokens")
    sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="print a new bearer token with a role")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--label", help="who or what the token is for")
    create.add_argument(
        "--destination",
        metavar="NAME",
        help="partner tokens (required for them): the destination whose results it returns",
    )
    create.add_argument("--data-dir", type=Path, metavar="DIR")
    create.add_argument("--config", type=Path, metavar="FILE")
    create.set_defaults(handler=run_token_create)
    listing = sub.add_parser("list", help="the tokens: id, role, label, created, revoked")
    listing.add_argument("--data-dir", type=Path, metavar="DIR")
    listing.add_argument("--config", type=Path, metavar="FILE")
    listing.set_defaults(handler=run_token_list)
    revoke = sub.add_parser("revoke", help="revoke a token by its id (from 'token list')")
    revoke.add_argument("token_id", metavar="ID")
    revoke.add_argument("--data-dir", type=Path, metavar="DIR")
    revoke.add_argument("--config", type=Path, metavar="FILE")
    revoke.set_defaults(handler=run_token_revoke)


def run_token_create(args: argparse.Namespace) -> int:
    from gateway.errors import UsageError
    from gateway.persistence.db import Database, private_dir  # only when needed
    from gateway.persistence.tokens import Role, create_token

    config = _config(args)
    role = Role(args.role)
    if (role is Role.PARTNER) != (args.destination is not None):
        raise UsageError(detail="--destination NAME is for partner tokens, and they need one")
    if args.destination is not None and args.destination not in config.destinations:
        raise UsageError(detail=f"no destination named {args.destination} in the configuration")
    private_dir(config.data_dir)
    db = Database(config.db_url)
    db.create_all()
    print(create_token(db, role, args.label, args.destination))
    return 0


def _token_db(args: argparse.Namespace) -> Any:
    from gateway.persistence.db import Database, private_dir

    config = _config(args)
    private_dir(config.data_dir)
    db = Database(config.db_url)
    db.create_all()
    return db


def run_token_list(args: argparse.Namespace) -> int:
    from gateway.persistence.tokens import list_tokens

    print(f"{'ID':<34}{'ROLE':<17}{'CREATED':<27}{'STATE':<9}LABEL / DESTINATION")
    for t in list_tokens(_token_db(args)):
        state = "revoked" if t.revoked else "active"
        extra = " ".join(
            x for x in (t.label or "", f"[{t.destination}]" if t.destination else "") if x
        )
        print(f"{t.token_id:<34}{t.role:<17}{t.created_at:<27}{state:<9}{extra}")
    return 0


def run_token_revoke(args: argparse.Namespace) -> int:
    import getpass

    from gateway.errors import UsageError
    from gateway.persistence.tokens import revoke_token

    if not revoke_token(_token_db(args), args.token_id, f"cli:{getpass.getuser()}"):
        raise UsageError(detail=f"no token with id {args.token_id} (see 'token list')")
    print(f"revoked {args.token_id}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    config = _config(args)
    from gateway.service import check_config, check_signoffs

    # every destination's profile compiled, its key found and (where required) its profile
    # hash signed off: exit 2 before the port is bound
    destinations = check_config(config)
    check_signoffs(config, {name: d.profile for name, d in destinations.items()})

    class GatewayServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.processes)
            if args.worker_model == "gthread":
                self.cfg.set("threads", args.threads)
            else:
                self.cfg.set("asgi_lifespan", "off")
            self.cfg.set("worker_class", args.worker_model)
            self.cfg.set("timeout", 300)
            self.cfg.set("accesslog", None)  # URLs can carry identifiers; no access log by default
            self.cfg.set("control_socket_disable", True)  # one per user otherwise, shared by all

            self.cfg.set("post_worker_init", _start_workers)
            if config.dimse.enabled:  # one SCP for the server, in the master, not per worker
                self.cfg.set("when_ready", _start_dimse)

        def load(self) -> Any:
            from gateway.intake.http import create_app

            app = create_app(config)  # per worker process: its own database connections
            if args.worker_model == "gthread":
                return app
            from gateway.intake.http.asgi import WsgiBridge

            return WsgiBridge(
                app,
                args.threads,
                config.data_dir / "spool" / ".incoming",
                config.limits.max_request_bytes,
            )

    def _start_workers(worker: Any) -> None:
        from gateway.intake.http.context import EXTENSION

        app = getattr(worker, "asgi", None) or worker.wsgi  # the bridge or the Flask app
        app.extensions[EXTENSION].start_workers()  # pipeline threads, per process

    def _start_dimse(_server: Any) -> None:
        from gateway.intake.dimse import start_scp
        from gateway.pipeline.dispatch import no_dispatch
        from gateway.service import build_gateway

        # intake only. With a broker it publishes; without one the master has no workers of
        # its own: the housekeepers of the server's processes hand its items over
        start_scp(build_gateway(config, dispatch=None if config.queue else no_dispatch))

    print(
        f"deid-gateway: serving on http://{args.host}:{args.port} (data {config.data_dir})",
        flush=True,
    )
    GatewayServer().run()
    return 0
