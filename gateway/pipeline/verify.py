"""The release gate: no identifying value of the input may appear anywhere in the output.

Independent of how the de-identifier decided things: it scans every element of the output
(recursive, private, file meta, short binary values) for every needle (original values the
profile replaced, plus the patient's names and identifiers) on word boundaries.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from gateway.dicom import tags as T
from gateway.dicom import vr as V
from gateway.dicom.rules import RuleSet
from gateway.dicom.values import codecs_of, dictionary_vr
from gateway.errors import QuarantineError, ReasonCode
from gateway.text.context import GENERIC_TERMS, PhiContext

MIN_NEEDLE = 4
MAX_BINARY_SCAN = 64 * 1024
SKIP_TAGS = frozenset(T.PIXEL_DATA_TAGS)  # pixel data is the pixel stage's


class Needles:
    """Identifying values to look for, matched case-insensitively on ASCII word boundaries.

    The search runs on bytes: untouched elements are scanned as they were read (never decoded,
    so pydicom writes them back as raw bytes), needles are encoded in the dataset's character
    set and in UTF-8. Plain ``bytes.find`` over one joined buffer: faster than any regex."""

    def __init__(self, needles: Iterable[str], encodings: Sequence[str] = ()) -> None:
        usable = {n.strip() for n in needles if len(n.strip()) >= MIN_NEEDLE}
        usable = {n for n in usable if n.upper() not in GENERIC_TERMS and n not in V.DUMMY_VALUES}
        items: set[bytes] = set()
        for needle in usable:
            for encoding in (*encodings, "utf-8"):
                try:
                    items.add(needle.encode(encoding).lower())
                except (UnicodeError, LookupError):
                    continue
        self.items = sorted(items, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.items)

    def hits(self, data: bytes) -> list[int]:
        """Offsets in ``data`` where a needle stands as a whole word (or run of words)."""
        low = data.lower()
        found = []
        for needle in self.items:
            start = low.find(needle)
            while start != -1:
                end = start + len(needle)
                if not _word_byte(low, start - 1) and not _word_byte(low, end):
                    found.append(start)
                    break
                start = low.find(needle, start + 1)
        return found


_WORD = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _word_byte(data: bytes, index: int) -> bool:
    return 0 <= index < len(data) and data[index] in _WORD


def compile_needles(needles: Iterable[str], encodings: Sequence[str] = ()) -> Needles | None:
    compiled = Needles(needles, encodings)
    return compiled if compiled else None


def needles_for(replaced: Iterable[str], phi: PhiContext) -> set[str]:
    """Everything the profile replaced (whole values; parts of the patient's own name) plus the
    patient's identifiers. Physicians' and operators' names count as whole values only."""
    return set(replaced) | phi.identifiers


Place = tuple[str, int]  # (path of the enclosing sequence items, tag)


def _encodings(ds: Dataset) -> list[str]:
    return codecs_of(ds)


def _values(ds: Dataset, rules: RuleSet, path: str, convert_all: bool) -> Iterator[tuple[Place, bytes]]:
    for key, raw in list(ds.items()):  # elements as held: raw ones are not converted
        tag = int(key)
        if tag in SKIP_TAGS:
            continue  # pixel data is the pixel stage's; a deferred value stays on disk
        if isinstance(raw, RawDataElement) and not convert_all:
            vr = raw.VR if raw.VR and raw.VR != "UN" else _dictionary_vr(tag)
            if vr == "SQ" and raw.value is not None:
                yield (path, tag), bytes(raw.value)  # kept as read: its items' bytes hold all
                continue
            if vr != "SQ":
                if raw.value is None or _skip(tag, vr, rules):  # None: deferred large binary
                    continue
                if vr in V.BINARY_VRS and len(raw.value) > MAX_BINARY_SCAN:
                    continue
                yield (path, tag), bytes(raw.value)
                continue
        elem = ds[tag] if isinstance(raw, RawDataElement) else raw
        if elem.VR == "SQ":
            where = f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})"
            for index, item in enumerate(elem.value or []):
                yield from _values(item, rules, f"{where}[{index}]", convert_all)
            continue
        if _skip(tag, elem.VR, rules) or elem.value is None:
            continue
        value = elem.value
        if isinstance(value, bytes):
            if len(value) <= MAX_BINARY_SCAN:
                yield (path, tag), value
            continue
        text = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
        yield (path, tag), text.encode("utf-8", errors="replace")


_dictionary_vr = dictionary_vr


@lru_cache(maxsize=16384)
def _skip(tag: int, vr: str, rules: RuleSet) -> bool:
    """Kept on purpose (numbers, explicit keeps, class UIDs): not searched. Cached: the same
    few hundred (tag, VR) pairs come with every instance."""
    if vr in V.NUMERIC_VRS or rules.for_tag(tag, vr).explicit_keep:
        return True
    return vr == "UI" and keyword_for_tag(tag) in V.CLASS_UID_KEYWORDS


def find_leaks(ds: Dataset, needles: Iterable[str], rules: RuleSet) -> list[str]:
    """Tag paths (never values) where a needle was found."""
    encodings = _encodings(ds)
    # ISO 2022 code extensions switch character sets inside a value: decode those properly
    convert_all = len(encodings) > 1 or any("2022" in e for e in encodings)
    compiled = compile_needles(needles, encodings)
    if compiled is None:
        return []
    sources = [("", ds)]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        sources.append(("meta:", meta))
    places: list[Place] = []
    offsets: list[int] = []
    pieces: list[bytes] = []
    cursor = 0
    for prefix, dataset in sources:
        for place, data in _values(dataset, rules, prefix, convert_all):
            places.append(place)
            offsets.append(cursor)
            pieces.append(data)
            cursor += len(data) + 1
    joined = b"\x00".join(pieces)
    found = {places[bisect.bisect_right(offsets, at) - 1] for at in compiled.hits(joined)}
    return sorted(f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})" for path, tag in found)


def verify_release(ds: Dataset, needles: Iterable[str], rules: RuleSet) -> None:
    hits = find_leaks(ds, needles, rules)
    if hits:
        raise QuarantineError(
            ReasonCode.VERIFICATION_FAILED,
            "an identifying value of the input survives at " + ", ".join(hits[:5]),
            stage="verify",
        )
