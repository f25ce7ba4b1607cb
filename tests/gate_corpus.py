"""The real sample corpus of the release-gate precision table, and each file's outcome.

Every file of pydicom's test files, of the deid-data images and (when installed) of
pydicom-data goes through the DICOM stages of the default profile (read, policy, pixels,
header, markers, release gate) and is encoded as Part 10. Its outcome is ``forwarded``,
``dropped:<reason>`` or ``quarantined:<reason>``; ``tests/data/gate_outcomes.json`` holds the
expected outcome per file, so a change in the gate's precision (or recall on real files) shows.

Regenerate the table after a deliberate change (then read the diff before committing it):

    PYTHONPATH=$PWD python3 -m tests.gate_corpus --write
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "data" / "gate_outcomes.json"
PROFILE = "research"  # the default profile
KEY = "test-key-" + "0123456789abcdef" * 3  # tests/conftest.py's key: date shifts are fixed
GATE = "quarantined:verification-failed"
SKIP_SUFFIXES = (".py", ".pyc")


def sources() -> dict[str, Path]:
    """Name -> folder of every installed sample collection."""
    import pydicom

    found = {"pydicom": Path(pydicom.__file__).parent / "data" / "test_files"}
    try:
        import deid_data

        found["deid-data"] = Path(deid_data.__file__).parent / "data"
    except ImportError:
        pass
    try:
        import data_store  # the pydicom-data package

        found["pydicom-data"] = Path(data_store.__file__).parent / "data"
    except ImportError:
        pass
    return found


def corpus() -> Iterator[tuple[str, Path]]:
    """(table key, path) of every sample file, in a stable order."""
    for name, root in sorted(sources().items()):
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
            for file in sorted(files):
                if file.startswith(".") or file.endswith(SKIP_SUFFIXES):
                    continue
                path = Path(folder) / file
                yield f"{name}/{path.relative_to(root).as_posix()}", path


class Runner:
    """The DICOM stages of one profile, built once."""

    def __init__(self, profile: str = PROFILE) -> None:
        from gateway.linkage.context import Linkage
        from gateway.linkage.keys import PseudonymKey
        from gateway.pipeline.dicom_stages import DicomProcessor
        from gateway.profiles.loader import load_profile
        from gateway.quiet import silence_libraries

        silence_libraries()  # library warnings quote values
        loaded = load_profile(profile)
        self.processor = DicomProcessor(
            loaded, Linkage(loaded, PseudonymKey("default", KEY.encode()))
        )

    def outcome(self, path: Path) -> str:
        from gateway.dicom.reader import read_dicom
        from gateway.dicom.writer import encode_part10
        from gateway.errors import DropError, QuarantineError

        try:
            done = self.processor.process(read_dicom(path))
            encode_part10(done.dataset)
        except DropError as exc:
            return f"dropped:{exc.reason.value}"
        except QuarantineError as exc:
            return f"quarantined:{exc.reason.value}"
        except Exception as exc:  # noqa: BLE001 - a bug, not an outcome: never in the table
            return f"error:{type(exc).__name__}"
        return "forwarded"


def outcomes(profile: str = PROFILE) -> dict[str, str]:
    runner = Runner(profile)
    return {key: runner.outcome(path) for key, path in corpus()}


def gate_rate(found: dict[str, str]) -> tuple[int, int]:
    """(quarantined by the gate, files that reached the gate)."""
    counts = Counter(found.values())
    return counts[GATE], counts["forwarded"] + counts[GATE]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write", action="store_true", help="rewrite tests/data/gate_outcomes.json"
    )
    parser.add_argument("--profile", default=PROFILE)
    args = parser.parse_args(argv)
    found = outcomes(args.profile)
    gated, reached = gate_rate(found)
    for outcome, count in sorted(Counter(found.values()).items()):
        print(f"{count:5d}  {outcome}")
    print(
        f"gate: {gated} of {reached} files that reached it ({100 * gated / max(reached, 1):.1f}%)"
    )
    if args.write:
        TABLE.parent.mkdir(exist_ok=True)
        TABLE.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
