"""``deid-gateway broker lookup|export``: the honest broker at the command line.

The vault is the service's database (``--config FILE``: its ``database_url`` or data folder;
``--database URL`` names one directly, e.g. ``sqlite:///research.vault.db`` for the vault a
``deidentify --output research`` run kept). Authority is the broker key: without it (from
``$DEID_GATEWAY_BROKER_KEY`` or ``broker_key_file``) nothing opens. Every look-up and export,
hit or miss, is audited in that database with the reason and the operating-system user.
"""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path
from typing import Any

from gateway.broker.cli_vault import open_vault
from gateway.broker.service import Caller, HonestBroker, NotInVault
from gateway.config import load_config
from gateway.errors import UsageError
from gateway.persistence.tokens import Role

EXIT_NOT_FOUND = 1


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "broker",
        help="honest broker: look up a pseudonym's original, export the mapping tables "
        "(each with a stated reason, each audited)",
        description="Re-identification under audit. The vault is the database of --config "
        "FILE (the service's) or --database URL (e.g. sqlite:///OUTPUT.vault.db, the vault of "
        "a deidentify run); the broker key comes from $DEID_GATEWAY_BROKER_KEY, the "
        "configuration's broker_key_file or --broker-key-file, never from the pseudonymisation "
        "key. Exit status: 0 found, 1 not in the vault, 2 usage (no reason, no key).",
    )
    sub = parser.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    lookup = sub.add_parser(
        "lookup", help="print the kind of a pseudonym, then its original on the last line"
    )
    lookup.add_argument("value", metavar="VALUE", help="a pseudonym (UID, PatientID, Type/id...)")
    _common(lookup)
    lookup.set_defaults(handler=run_lookup)
    export = sub.add_parser(
        "export",
        help="write uid_mapping.csv and patid_mapping.csv (id_old,id_new; mode 0600) for an audit",
    )
    export.add_argument("--output", required=True, type=Path, metavar="DIR")
    export.add_argument("--destination", metavar="NAME", help="one destination's rows only")
    _common(export)
    export.set_defaults(handler=run_export)
    rekey = sub.add_parser(
        "rekey",
        help="rotate the broker key: reseal every vault row with the key in --new-key-file "
        "(the current key by the usual lookup); resumable",
    )
    rekey.add_argument("--new-key-file", required=True, type=Path, metavar="FILE")
    _common(rekey)
    rekey.set_defaults(handler=run_rekey)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, metavar="TEXT", help="why (audited)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="service configuration (default: the embedded default, deid-data/gateway.db or "
        "$DEID_GATEWAY_DATA_DIR / $DEID_GATEWAY_DATABASE_URL)",
    )
    where.add_argument("--database", metavar="URL", help="the vault's database URL")
    parser.add_argument("--broker-key-file", type=Path, metavar="FILE")


def run_rekey(args: argparse.Namespace) -> int:
    from gateway.broker.keys import BrokerKey, material
    from gateway.broker.vault import Vault

    broker = _broker(args)
    try:
        text = args.new_key_file.read_text(encoding="utf-8")
    except OSError:
        raise UsageError(detail=f"{args.new_key_file}: cannot be read") from None
    new = Vault(broker.db, BrokerKey(material(text), source=f"file:{args.new_key_file}"))
    if new.key.fingerprint == broker.vault.key.fingerprint:
        raise UsageError(detail="the new broker key is the current one")
    count = broker.vault.reseal(new)
    broker.audit_rekey(args.reason, _caller(), count)
    print(f"resealed {count} vault rows; broker key fingerprint now {new.key.fingerprint}")
    return 0


def _broker(args: argparse.Namespace) -> HonestBroker:
    config = load_config(args.config) if args.database is None else None
    url = args.database or (config.db_url if config is not None else "")
    key_file = args.broker_key_file or (config.broker_key_file if config is not None else None)
    vault = open_vault(url, key_file, create_key=False)
    return HonestBroker(vault.db, vault)


def _caller() -> Caller:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Caller(f"cli:{user}"[:32], Role.HONEST_BROKER.value)


def run_lookup(args: argparse.Namespace) -> int:
    broker = _broker(args)
    try:
        answer = broker.lookup(args.value, args.reason, _caller())
    except NotInVault:
        print("not in the vault (audited)")
        return EXIT_NOT_FOUND
    print(f"kind: {answer.kind.value} (destination {answer.destination})")
    print(answer.original)
    return 0


def run_export(args: argparse.Namespace) -> int:
    tables = _broker(args).export(args.reason, _caller(), args.destination)
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, text in tables.items():
        path = output / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(f"{path}: {text.count(chr(10)) - 1} rows")
    return 0
