"""``deid-gateway profile validate|explain|list``: what a privacy officer reads and signs off."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from gateway.dicom.iod import IodTypes, load_iod_table
from gateway.dicom.standard import load_table
from gateway.errors import ConfigurationError, ReasonCode
from gateway.profiles.compiler import compile_profile
from gateway.profiles.loader import (
    ProfileInvalid,
    available_profiles,
    load_profile,
    resolve_profile_path,
)


def register(commands: Any) -> None:
    parser = commands.add_parser("profile", help="validate, explain and list profiles")
    sub = parser.add_subparsers(dest="profile_command", required=True, metavar="ACTION")

    validate = sub.add_parser(
        "validate",
        help="check a profile: every problem any stage would refuse, each as file:line "
        "(exit 1 when there are any)",
    )
    validate.add_argument("file", metavar="FILE|NAME")
    validate.set_defaults(handler=run_validate)

    explain = sub.add_parser(
        "explain", help="the effective action for every attribute (tag, keyword, action, why)"
    )
    explain.add_argument("name", metavar="NAME|FILE")
    explain.add_argument("--format", choices=["table", "csv", "json"], default="table")
    explain.add_argument(
        "--sop-class",
        metavar="UID|IOD",
        help="show which branch of each compound code (X/Z, X/D, ...) applies in this SOP "
        "Class's IOD (a UID, or an IOD id such as ct-image); without it they read 'by IOD'",
    )
    explain.set_defaults(handler=run_explain)

    listing = sub.add_parser("list", help="profiles available by name")
    listing.set_defaults(handler=run_list)


def run_validate(args: argparse.Namespace) -> int:
    """Every problem any stage would refuse, each as file:line; exit 1 when there are any."""
    try:
        profile = compile_profile(args.file).profile
    except ProfileInvalid as exc:
        for line in exc.report():
            print(line, file=sys.stderr)
        return 1
    except ConfigurationError as exc:
        print(f"{resolve_safe(args.file)}: {exc.detail}", file=sys.stderr)
        return 1
    print(f"{resolve_safe(args.file)}: valid ({profile.method_description})")
    return 0


def resolve_safe(name: str) -> str:
    try:
        return str(resolve_profile_path(name))
    except ConfigurationError:
        return name


def run_explain(args: argparse.Namespace) -> int:
    compiled = compile_profile(args.name)
    profile = compiled.profile
    iod = _iod(args.sop_class) if args.sop_class else None
    rows: list[dict[str, str]] = [
        {"standard": "DICOM", **row} for row in compiled.dicom.rules.explain(iod)
    ]
    rows.extend(_fhir_rows(profile))
    out = sys.stdout
    if args.format == "json":
        json.dump(
            {
                "profile": profile.name,
                "version": profile.version,
                "hash": profile.content_hash,
                "table_edition": load_table().edition,
                "iod_table_edition": load_iod_table().edition,
                "iod": iod.iod if iod else None,
                "options": [o.value for o in profile.dicom.options],
                "rules": rows,
            },
            out,
            indent=1,
        )
        out.write("\n")
        return 0
    if args.format == "csv":
        writer = csv.DictWriter(out, fieldnames=["standard", "tag", "keyword", "action", "why"])
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in writer.fieldnames} for r in rows)
        return 0
    print(f"# {profile.method_description}")
    print(f"# {profile.description}")
    print(
        f"# PS3.15 Table E.1-1 edition {load_table().edition}; options: "
        + (", ".join(o.value for o in profile.dicom.options) or "none")
    )
    print(
        f"# compound codes: by the attribute's type in the instance's IOD (PS3.3 edition "
        f"{load_iod_table().edition})" + (f"; shown for {iod.iod}" if iod else "")
    )
    print(f"{'STD':<6}{'TAG':<16}{'KEYWORD':<44}{'ACTION':<30}WHY")
    for row in rows:
        print(
            f"{row['standard']:<6}{row['tag']:<16}{row['keyword'][:43]:<44}{row['action'][:29]:<30}{row['why']}"
        )
    return 0


def _iod(name: str) -> IodTypes:
    table = load_iod_table()
    found = table.for_sop_class(name) or table.iods.get(name.strip().lower())
    if found is None:
        raise ConfigurationError(
            ReasonCode.UNSUPPORTED_INPUT,
            f"--sop-class: '{name}' is no SOP Class UID or IOD id known to the IOD table",
        )
    return found


def _fhir_rows(profile: Any) -> list[dict[str, str]]:
    try:
        from gateway.profiles.explain_fhir import explain_fhir_rules
    except ImportError:
        return []
    rows = []
    for row in explain_fhir_rules(profile):
        rows.append(
            {
                "standard": "FHIR",
                "tag": str(row.get("path") or row.get("type") or row.get("target") or ""),
                "keyword": str(row.get("type") or row.get("target") or ""),
                "action": str(row.get("method", "")),
                "why": str(row.get("why", "")),
            }
        )
    return rows


def run_list(args: argparse.Namespace) -> int:
    for name in available_profiles():
        profile = load_profile(name)
        print(f"{name:<16}v{profile.version:<6}{profile.description}")
    return 0
