"""``deid-gateway preview FILE``: before/after of one instance, for the privacy officer.

Shows the original values on purpose (the officer is entitled to see their own data); nothing
is written or logged. ``deid-gateway samples`` prints a folder of real sample images to try on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gateway.errors import UsageError
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.preview import destination_for, preview_dicom
from gateway.profiles.loader import DEFAULT_PROFILE, load_profile


def register(commands: Any) -> None:
    preview = commands.add_parser(
        "preview", help="show what a profile does to one DICOM file (before -> after)"
    )
    preview.add_argument("file", type=Path)
    preview.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME|FILE")
    preview.add_argument("--key-file", type=Path, metavar="FILE")
    preview.add_argument("--all", action="store_true", help="also list unchanged attributes")
    preview.set_defaults(handler=run_preview)

    samples = commands.add_parser(
        "samples", help="print the folder of pydicom's sample images (to try the gateway on)"
    )
    samples.set_defaults(handler=run_samples)


def run_preview(args: argparse.Namespace) -> int:
    """The one runner with a store that keeps nothing (``gateway.pipeline.preview``): the
    outcome is the one the pipeline would reach, and the rows what it would forward."""
    profile = load_profile(args.profile)
    linkage = Linkage.from_profile(profile, KeyRing(key_file=args.key_file))
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(detail=f"{args.file}: {exc.strerror or exc}") from None
    result = preview_dicom(destination_for(profile, linkage), data, with_original=True)
    outcome = result.outcome
    if not outcome.delivered:
        reason = f" ({outcome.reason.value})" if outcome.reason else ""
        print(f"{args.file}: would be {outcome.status.value}{reason}: {outcome.detail}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"# {args.file} under {profile.method_description}")
    print(f"{'TAG':<34}{'KEYWORD':<34}{'BEFORE':<40}AFTER")
    for row in result.rows:
        if not row.changed and not args.all:
            continue
        old = row.before if row.before is not None else "<absent>"
        new = row.after if row.after is not None else "<removed>"
        print(f"{row.where:<34}{row.keyword[:33]:<34}{old[:39]:<40}{new}")
    done = result.processed
    assert done is not None  # delivered: the stages ran
    counts = ", ".join(f"{k} {v}" for k, v in sorted(done.result.text_counts.items()))
    offset = done.result.person.date_offset_days
    print(f"# date offset {offset:+d} days; text spans replaced: {counts or 'none'}")
    return 0


def run_samples(args: argparse.Namespace) -> int:
    from pydicom.data import get_testdata_file

    print(os.path.dirname(str(get_testdata_file("CT_small.dcm"))))
    return 0
