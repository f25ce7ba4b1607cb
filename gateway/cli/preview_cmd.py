"""``deid-gateway preview FILE``: before/after of one instance, for the privacy officer.

Shows the original values on purpose (the officer is entitled to see their own data); nothing
is written or logged. ``deid-gateway samples`` prints a folder of real sample images to try on.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

from gateway.dicom.listing import flatten
from gateway.dicom.reader import read_dicom
from gateway.errors import DeidError
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.dicom_stages import DicomProcessor
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
    profile = load_profile(args.profile)
    linkage = Linkage.from_profile(profile, KeyRing(key_file=args.key_file))
    processor = DicomProcessor(profile, linkage)
    try:
        original = read_dicom(args.file)
        before = flatten(original)
        done = processor.process(copy.deepcopy(original))
    except DeidError as exc:
        print(
            f"{args.file}: would be {type(exc).__name__.replace('Error', '').lower()}d "
            f"({exc.reason.value}): {exc.detail}",
            file=sys.stderr,
        )
        return 1
    after = flatten(done.dataset)
    print(f"# {args.file} under {profile.method_description}")
    print(f"{'TAG':<34}{'KEYWORD':<34}{'BEFORE':<40}AFTER")
    for where in sorted(set(before) | set(after)):
        keyword, old = before.get(where, ("", "<absent>"))
        new_keyword, new = after.get(where, ("", "<removed>"))
        if old == new and not args.all:
            continue
        print(f"{where:<34}{(keyword or new_keyword)[:33]:<34}{old[:39]:<40}{new}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(done.result.text_counts.items()))
    print(
        f"# date offset {done.result.person.date_offset_days:+d} days; text spans replaced: {counts or 'none'}"
    )
    return 0


def run_samples(args: argparse.Namespace) -> int:
    from pydicom.data import get_testdata_file

    print(os.path.dirname(str(get_testdata_file("CT_small.dcm"))))
    return 0
