"""``deid-gateway``: batch de-identification, profile tools, and (later) the service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import (
    broker_cmd,
    deidentify_cmd,
    export_cmd,
    preview_cmd,
    profile_cmd,
    serve_cmd,
    worker_cmd,
)
from gateway.errors import ConfigurationError, DeidError, UsageError
from gateway.profiles.problems import ProfileInvalid
from gateway.quiet import silence_libraries


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deid-gateway",
        description="Linked DICOM + FHIR de-identification for research sharing.",
    )
    parser.add_argument("--version", action="version", version=f"deid-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    deidentify_cmd.register(commands)
    profile_cmd.register(commands)
    preview_cmd.register(commands)
    serve_cmd.register(commands)
    worker_cmd.register(commands)
    broker_cmd.register(commands)
    export_cmd.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    silence_libraries()
    try:
        return int(args.handler(args))
    except ProfileInvalid as exc:
        print("deid-gateway: error: the profile is not valid", file=sys.stderr)
        for line in exc.report():
            print(line, file=sys.stderr)
        return EXIT_USAGE
    except (ConfigurationError, UsageError) as exc:
        print(f"deid-gateway: error: {exc.detail or exc.reason.value}", file=sys.stderr)
        return EXIT_USAGE
    except DeidError as exc:  # the run itself cannot go on
        print(f"deid-gateway: error ({exc.reason.value}): {exc.detail}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("deid-gateway: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback: its text may quote data
        print(f"deid-gateway: error (internal-error): {type(exc).__name__}", file=sys.stderr)
        return EXIT_RUN_FAILED


EXIT_USAGE = 2
EXIT_RUN_FAILED = 3


if __name__ == "__main__":
    sys.exit(main())
