"""The release gate: no identifying value of the input may appear anywhere in the output.

Independent of how the de-identifier decided things: it scans every element of the output
(recursive, private, file meta, short binary values) for every needle (original values the
profile replaced, plus the patient's names and identifiers) on word boundaries.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from pydicom.dataset import Dataset

from gateway.dicom import vr as V
from gateway.dicom.rules import RuleSet
from gateway.errors import QuarantineError, ReasonCode
from gateway.text.context import GENERIC_TERMS, PhiContext

MIN_NEEDLE = 4
MAX_BINARY_SCAN = 64 * 1024
SKIP_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # pixel data is the pixel stage's


class Needles:
    """Identifying values to look for, matched case-insensitively on ASCII word boundaries.

    Plain substring search over one joined text (C-speed ``str.find``) rather than a per-
    instance regex: compiling an alternation of every needle cost more than the search."""

    def __init__(self, needles: Iterable[str]) -> None:
        usable = {n.strip() for n in needles if len(n.strip()) >= MIN_NEEDLE}
        usable = {n for n in usable if n.upper() not in GENERIC_TERMS and n not in V.DUMMY_VALUES}
        self.items = sorted({n.lower() for n in usable}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.items)

    def hits(self, text: str) -> list[int]:
        """Offsets in ``text`` where a needle stands as a whole word (or run of words)."""
        low = text.lower()
        found = []
        for needle in self.items:
            start = low.find(needle)
            while start != -1:
                end = start + len(needle)
                if not _word_char(low, start - 1) and not _word_char(low, end):
                    found.append(start)
                    break
                start = low.find(needle, start + 1)
        return found


def _word_char(text: str, index: int) -> bool:
    if index < 0 or index >= len(text):
        return False
    char = text[index]
    return char.isascii() and char.isalnum()


def compile_needles(needles: Iterable[str]) -> Needles | None:
    compiled = Needles(needles)
    return compiled if compiled else None


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


def find_leaks(ds: Dataset, needles: Needles | None, rules: RuleSet) -> list[str]:
    """Tag paths (never values) where a needle was found."""
    if not needles:
        return []
    sources = [("", ds)]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        sources.append(("meta:", meta))
    places: list[str] = []
    offsets: list[int] = []
    pieces: list[str] = []
    cursor = 0
    for prefix, dataset in sources:
        for where, text in _texts(dataset, rules, prefix):
            places.append(where)
            offsets.append(cursor)
            pieces.append(text)
            cursor += len(text) + 1
    joined = "\x00".join(pieces)
    hits = sorted({places[bisect.bisect_right(offsets, at) - 1] for at in needles.hits(joined)})
    return hits


def verify_release(ds: Dataset, needles: Iterable[str], rules: RuleSet) -> None:
    hits = find_leaks(ds, compile_needles(needles), rules)
    if hits:
        raise QuarantineError(
            ReasonCode.VERIFICATION_FAILED,
            "an identifying value of the input survives at " + ", ".join(hits[:5]),
            stage="verify",
        )
