"""``deid-gateway profile validate|explain|diff|list|signoff|versions``: what a privacy
officer reads and signs off (the sign-off is kept, by content hash, in the service database). A profile may ``extends`` another (a shipped name or a file relative to it) and list only
what differs; explain shows per row the file that decided it, diff what a change changes."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from gateway.dicom.iod import IodTypes, load_iod_table
from gateway.dicom.standard import load_table
from gateway.errors import ConfigurationError, ReasonCode, UsageError
from gateway.profiles.compiler import compile_profile
from gateway.profiles.loader import (
    ProfileInvalid,
    available_profiles,
    load_profile,
    read_profile,
    resolve_profile_path,
)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "profile",
        help="validate, explain, diff, list and sign off profiles",
        description="A profile may start with 'extends: NAME|FILE' (a shipped profile, or a "
        "file relative to the extending one) and list only what differs: mappings merge key "
        "by key, other values replace the parent's; dicom.options, dicom.overrides (by "
        "attribute), linkage.identity.namespaces (by name) and the other lists take entries "
        "to add or {add: [...], remove: [...]}; the child's fhir.rules come before the "
        "parent's (first match wins). Cycles and unknown parents are file:line problems.",
    )
    sub = parser.add_subparsers(dest="profile_command", required=True, metavar="ACTION")

    validate = sub.add_parser(
        "validate",
        help="check a profile: every problem any stage would refuse, each as file:line "
        "(exit 1 when there are any)",
    )
    validate.add_argument("file", metavar="FILE|NAME")
    validate.set_defaults(handler=run_validate)

    explain = sub.add_parser(
        "explain",
        help="the effective action for every attribute (tag, keyword, action, why, and from: "
        "the file that decided it, 'standard' or 'built-in' when no profile setting did)",
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

    diff = sub.add_parser(
        "diff",
        help="every effective action that differs between two profiles (extends resolved): "
        "DICOM attributes by tag, FHIR rules by path/type, settings; exit 0 either way, "
        "2 on a profile that is not valid",
    )
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")
    diff.add_argument("--format", choices=["table", "json"], default="table")
    diff.set_defaults(handler=run_diff)

    listing = sub.add_parser("list", help="profiles available by name")
    listing.set_defaults(handler=run_list)

    signoff = sub.add_parser(
        "signoff",
        help="record a privacy officer's sign-off of a profile (its effective content hash) "
        "in the service database; destinations that require one refuse to start without it",
    )
    signoff.add_argument("file", metavar="FILE|NAME")
    signoff.add_argument("--by", required=True, metavar="NAME", help="who signs off")
    signoff.add_argument("--statement", required=True, metavar="TEXT", help="what is signed")
    _database_args(signoff)
    signoff.set_defaults(handler=run_signoff)

    versions = sub.add_parser(
        "versions", help="profile versions stored in the service database, with sign-offs"
    )
    _database_args(versions)
    versions.set_defaults(handler=run_versions)


def _database_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, metavar="FILE", help="service configuration YAML")
    group.add_argument("--data-dir", type=Path, metavar="DIR", help="the service's data folder")


def _database(args: argparse.Namespace) -> Any:
    """The service database of ``--config`` / ``--data-dir`` (as ``token create`` opens it)."""
    from gateway.config import load_config
    from gateway.persistence.db import Database, private_dir

    config = load_config(args.config, data_dir=args.data_dir)
    private_dir(config.data_dir)
    db = Database(config.db_url)
    db.create_all()
    return db


def run_signoff(args: argparse.Namespace) -> int:
    """Compile (problems: exit 2), store the version and the sign-off, print the hash."""
    from gateway.persistence.profiles import ProfileRecord, sign_off

    by, statement = args.by.strip(), args.statement.strip()
    if not by or not statement:
        raise UsageError(detail="--by and --statement must not be empty")
    compiled = compile_profile(args.file)
    text, file = read_profile(args.file)
    profile = compiled.profile
    record = ProfileRecord.of(profile, text, file)
    done = sign_off(_database(args), record, by, statement)
    print(profile.content_hash)
    print(
        f"signed off: {profile.name} v{profile.version} ({file}) #{profile.content_hash} "
        f"by {done.signed_by} at {done.signed_at.isoformat(timespec='seconds')}"
    )
    return 0


def run_versions(args: argparse.Namespace) -> int:
    """Stored versions, oldest first, each with its sign-offs (never the profile text)."""
    from gateway.persistence.profiles import list_versions

    for v in list_versions(_database(args)):
        status = f"{len(v.signoffs)} sign-off(s)" if v.signoffs else "not signed off"
        print(
            f"{v.content_hash}  {v.name} v{v.version}  {v.source_file}  "
            f"saved {v.saved_at.isoformat(timespec='seconds')} by {v.saved_by}  {status}"
        )
        for s in v.signoffs:
            print(f"    {s.signed_at.isoformat(timespec='seconds')}  {s.signed_by}: {s.statement}")
    return 0


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
        fields = ["standard", "tag", "keyword", "action", "why", "from"]
        writer = csv.DictWriter(out, fieldnames=fields)
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
    print(f"{'STD':<6}{'TAG':<16}{'KEYWORD':<44}{'ACTION':<30}{'FROM':<20}WHY")
    for row in rows:
        print(
            f"{row['standard']:<6}{row['tag']:<16}{row['keyword'][:43]:<44}"
            f"{row['action'][:29]:<30}{_short(row['from'])[:19]:<20}{row['why']}"
        )
    return 0


def _short(origin: str) -> str:
    """A file's name (the table is narrow; csv and json carry the path)."""
    return Path(origin).name if origin.endswith((".yaml", ".yml")) else origin


def run_diff(args: argparse.Namespace) -> int:
    """What changes from OLD to NEW; exit 0 whether anything does or not."""
    from gateway.profiles.diff import diff_profiles

    before, after = compile_profile(args.old), compile_profile(args.new)
    rows = diff_profiles(before, after)
    sides = {"old": (args.old, before), "new": (args.new, after)}
    if args.format == "json":
        heads = {
            side: {
                "profile": c.profile.name,
                "version": c.profile.version,
                "hash": c.profile.content_hash,
                "file": c.source.file,
            }
            for side, (_, c) in sides.items()
        }
        json.dump({**heads, "differences": [r.as_dict() for r in rows]}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for side, (name, c) in sides.items():
        print(f"# {side}: {c.profile.method_description} ({resolve_safe(name)})")
    print(f"# {len(rows)} difference(s)")
    if rows:
        print(f"{'KIND':<9}{'KEY':<40}{'KEYWORD':<32}{'OLD':<30}NEW")
    for row in rows:
        old = row.old if row.old is not None else "(none)"
        new = row.new if row.new is not None else "(none)"
        print(f"{row.kind:<9}{row.key[:39]:<40}{row.name[:31]:<32}{old:<29} {new}")
        for label, why in (("old", row.old_why), ("new", row.new_why)):
            if why:
                print(f"{'':<9}{label}: {why}")
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
                "from": str(row.get("from", "")),
            }
        )
    return rows


def run_list(args: argparse.Namespace) -> int:
    for name in available_profiles():
        profile = load_profile(name)
        print(f"{name:<16}v{profile.version:<6}{profile.description}")
    return 0
