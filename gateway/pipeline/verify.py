"""The release gate: no identifying value of the input may appear anywhere in the output.

Independent of how the de-identifier decided things: it scans every element of the output
(recursive, private, file meta, short binary values) for every needle (original values the
profile replaced, plus the patient's names and identifiers) on word boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from pydicom.dataset import Dataset

from gateway.dicom import vr as V
from gateway.dicom.rules import RuleSet
from gateway.errors import QuarantineError, ReasonCode
from gateway.text.context import GENERIC_TERMS, PhiContext

MIN_NEEDLE = 4
MAX_BINARY_SCAN = 64 * 1024
SKIP_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # pixel data is the pixel stage's


def compile_needles(needles: Iterable[str]) -> re.Pattern[str] | None:
    usable = {
        n.strip() for n in needles if len(n.strip()) >= MIN_NEEDLE and n.strip().upper() not in GENERIC_TERMS
    }
    usable.discard(V.DUMMY_TEXT)
    if not usable:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(usable, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def needles_for(replaced: Iterable[str], phi: PhiContext) -> set[str]:
    """Everything the profile replaced (whole values; parts of the patient's own name) plus the
    patient's identifiers. Physicians' and operators' names count as whole values only."""
    return set(replaced) | phi.identifiers


def _texts(ds: Dataset, rules: RuleSet, path: str) -> Iterator[tuple[str, str]]:
    for key in list(ds.keys()):
        tag = int(key)
        if tag in SKIP_TAGS:
            continue  # never loads deferred pixel data
        elem = ds[tag]
        where = f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or []):
                yield from _texts(item, rules, f"{where}[{index}]")
            continue
        if elem.VR in V.NUMERIC_VRS or rules.for_tag(tag, elem.VR).explicit_keep:
            continue
        if elem.VR == "UI" and elem.keyword in V.CLASS_UID_KEYWORDS:
            continue
        value = elem.value
        if isinstance(value, bytes):
            if len(value) <= MAX_BINARY_SCAN:
                yield where, value.decode("latin-1")
            continue
        if value is None:
            continue
        yield where, "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)


def find_leaks(ds: Dataset, pattern: re.Pattern[str] | None, rules: RuleSet) -> list[str]:
    """Tag paths (never values) where a needle was found."""
    if pattern is None:
        return []
    hits = []
    sources = [("", ds)]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        sources.append(("meta:", meta))
    for prefix, dataset in sources:
        for where, text in _texts(dataset, rules, prefix):
            if pattern.search(text):
                hits.append(where)
    return hits


def verify_release(ds: Dataset, needles: Iterable[str], rules: RuleSet) -> None:
    hits = find_leaks(ds, compile_needles(needles), rules)
    if hits:
        raise QuarantineError(
            ReasonCode.VERIFICATION_FAILED,
            "an identifying value of the input survives at " + ", ".join(hits[:5]),
            stage="verify",
        )
