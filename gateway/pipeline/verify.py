"""The release gate: no identifying value of the input may appear anywhere in the output.

Independent of how the de-identifier decided things: it scans every element of the output
(recursive, private, file meta, short binary values) for every needle (original values the
profile replaced, plus the patient's identifiers) on word boundaries. Whether a hit is a leak
is decided by what the needle is and where it stands (``leak_policy``): the reason names the
kind of value, the attribute it came from and where it was found, never the value.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from gateway.dicom import tags as T
from gateway.dicom import vr as V
from gateway.dicom.needles import Needle, NeedleSet, as_needles
from gateway.dicom.rules import RuleSet
from gateway.dicom.values import SINGLE_VALUED, codecs_of, dictionary_vr
from gateway.errors import QuarantineError, ReasonCode
from gateway.pipeline.leak_policy import FieldKind, Match, field_kind, match_for
from gateway.text.context import GENERIC_TERMS, PhiContext

MIN_NEEDLE = 4
MAX_BINARY_SCAN = 64 * 1024
MAX_REASONS = 5
SKIP_TAGS = frozenset(T.PIXEL_DATA_TAGS)  # pixel data is the pixel stage's


_ALNUM = re.compile(r"[^\W_]")


def _usable(text: str) -> bool:
    return (
        len(text) >= MIN_NEEDLE
        and text.upper() not in GENERIC_TERMS
        and text not in V.DUMMY_VALUES
        and _ALNUM.search(text) is not None  # "----", "...." say nothing
    )


class Needles:
    """Identifying values to look for, matched case-insensitively on ASCII word boundaries.

    The search runs on bytes: untouched elements are scanned as they were read (never decoded,
    so pydicom writes them back as raw bytes), needles are encoded in the dataset's character
    set and in UTF-8. Plain ``bytes.find`` over one joined buffer: faster than any regex.
    Each encoded needle remembers the needles (kind, source) it stands for, sourced first."""

    def __init__(self, needles: Iterable[str | Needle], encodings: Sequence[str] = ()) -> None:
        by_text: dict[str, list[Needle]] = {}
        for needle in needles if isinstance(needles, NeedleSet) else as_needles(needles):
            by_text.setdefault(needle.text.strip(), []).append(needle)
        self.by_bytes: dict[bytes, list[Needle]] = {}
        codecs = (*encodings, "utf-8")
        for text, group in by_text.items():
            if not _usable(text):
                continue
            if text.isascii():  # the same bytes in every character set DICOM allows here
                self.by_bytes.setdefault(text.lower().encode("ascii"), []).extend(group)
                continue
            encoded: set[bytes] = set()
            for encoding in codecs:
                try:
                    encoded.add(text.encode(encoding).lower())
                except (UnicodeError, LookupError):
                    continue
            for item in encoded:
                self.by_bytes.setdefault(item, []).extend(group)
        self.items = sorted(self.by_bytes, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.items)

    def hits(self, data: bytes) -> list[int]:
        """Offsets in ``data`` where a needle stands as a whole word (or run of words)."""
        return sorted({at for at, _ in self.occurrences(data, [0])})

    def occurrences(self, data: bytes, starts: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        """(offset, needle bytes): every word-bounded occurrence, at most one per needle in
        each piece (``starts``: sorted offsets where the pieces of ``data`` begin)."""
        low = data.lower()
        for needle in self.items:
            start = low.find(needle)
            while start != -1:
                end = start + len(needle)
                if not _word_byte(low, start - 1) and not _word_byte(low, end):
                    yield start, needle
                    piece = bisect.bisect_right(starts, start)  # skip to the next piece
                    start = starts[piece] if piece < len(starts) else -1
                    if start != -1:
                        start = low.find(needle, start)
                    continue
                start = low.find(needle, start + 1)


_WORD = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _word_byte(data: bytes, index: int) -> bool:
    return 0 <= index < len(data) and data[index] in _WORD


def compile_needles(
    needles: Iterable[str | Needle], encodings: Sequence[str] = ()
) -> Needles | None:
    compiled = Needles(needles, encodings)
    return compiled if compiled else None


def needles_for(replaced: NeedleSet | Iterable[str | Needle], phi: PhiContext) -> NeedleSet:
    """Everything the profile replaced (whole values; parts of the patient's own name) plus the
    patient's identifiers. Physicians' and operators' names count as whole values only."""
    if isinstance(replaced, NeedleSet):
        return NeedleSet(replaced.needles, replaced.produced_dates, frozenset(phi.identifiers))
    return NeedleSet(frozenset(as_needles(replaced)), frozenset(), frozenset(phi.identifiers))


class Piece(NamedTuple):
    """One scanned value: where it is (the dataset holding it, for a second look), its VR and
    bytes. ``opaque``: a sequence kept as read, scanned as its items' bytes."""

    dataset: Dataset
    path: str
    tag: int
    vr: str
    data: bytes
    opaque: bool = False

    @property
    def place(self) -> str:
        return f"{self.path}({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"


@dataclass(frozen=True)
class Leak:
    needle: Needle
    place: str
    field: FieldKind
    match: Match

    def describe(self) -> str:
        """Kind, source tag, place and field: never the value."""
        return (
            f"{self.needle.kind.value} from {self.needle.source_text} at {self.place} "
            f"({self.field.value} field, {self.match.value})"
        )


Where = tuple[Dataset, str, int, str, bool]  # Piece without its bytes: made per element
Found = tuple[Where, bytes]


def _pieces(ds: Dataset, rules: RuleSet, path: str, convert_all: bool) -> Iterator[Found]:
    """(where, bytes) of every value to scan; plain tuples: this runs for every element."""
    for key, raw in list(ds.items()):  # elements as held: raw ones are not converted
        tag = int(key)
        if tag in SKIP_TAGS:
            continue  # pixel data is the pixel stage's; a deferred value stays on disk
        if isinstance(raw, RawDataElement) and not convert_all:
            vr = raw.VR if raw.VR and raw.VR != "UN" else _dictionary_vr(tag)
            if vr == "SQ" and raw.value is not None:
                yield (ds, path, tag, vr, True), bytes(raw.value)  # opaque: its items' bytes
                continue
            if vr != "SQ":
                if raw.value is None or _skip(tag, vr, rules):  # None: deferred large binary
                    continue
                if vr in V.BINARY_VRS and len(raw.value) > MAX_BINARY_SCAN:
                    continue
                yield (ds, path, tag, vr, False), bytes(raw.value)
                continue
        elem = ds[tag] if isinstance(raw, RawDataElement) else raw
        if elem.VR == "SQ":
            yield from _sequence_pieces(ds, tag, rules, path, convert_all)
            continue
        if _skip(tag, elem.VR, rules) or elem.value is None:
            continue
        value = elem.value
        if isinstance(value, bytes):
            if len(value) <= MAX_BINARY_SCAN:
                yield (ds, path, tag, elem.VR, False), value
            continue
        text = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
        yield (ds, path, tag, elem.VR, False), text.encode("utf-8", errors="replace")


def _sequence_pieces(
    ds: Dataset, tag: int, rules: RuleSet, path: str, convert_all: bool
) -> Iterator[Found]:
    where = f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})"
    for index, item in enumerate(ds[tag].value or []):
        yield from _pieces(item, rules, f"{where}[{index}]", convert_all)


_dictionary_vr = dictionary_vr


@lru_cache(maxsize=16384)
def _skip(tag: int, vr: str, rules: RuleSet) -> bool:
    """Kept on purpose (numbers, explicit keeps, class UIDs): not searched. Cached: the same
    few hundred (tag, VR) pairs come with every instance."""
    if vr in V.NUMERIC_VRS or rules.for_tag(tag, vr).explicit_keep:
        return True
    return vr == "UI" and keyword_for_tag(tag) in V.CLASS_UID_KEYWORDS


def _whole_values(piece: Piece) -> set[bytes]:
    data = piece.data.lower()
    parts = [data] if piece.vr in SINGLE_VALUED else data.split(b"\\")
    return {p.strip(b" \x00") for p in parts}


def _decide(
    piece: Piece, needle: Needle, encoded: bytes, produced: frozenset[tuple[int, str]]
) -> Leak | None:
    field = field_kind(piece.tag, piece.vr)
    match = match_for(needle.kind, field)
    if match is Match.NEVER:
        return None
    if match is Match.WHOLE and encoded not in _whole_values(piece):
        return None
    if match is Match.UNPRODUCED and (piece.tag, needle.text.strip()) in produced:
        return None  # the date shift wrote this value here; it equals another date by chance
    return Leak(needle, piece.place, field, match)


class _Scan:
    """One gate run over one dataset."""

    def __init__(
        self,
        compiled: Needles,
        rules: RuleSet,
        produced: frozenset[tuple[int, str]],
        convert_all: bool,
    ) -> None:
        self.compiled = compiled
        self.rules = rules
        self.produced = produced
        self.convert_all = convert_all

    def run(self, found: Iterable[Found]) -> list[Leak]:
        wheres: list[Where] = []
        starts: list[int] = []
        chunks: list[bytes] = []
        cursor = 0
        for where, data in found:
            wheres.append(where)
            starts.append(cursor)
            chunks.append(data)
            cursor += len(data) + 1
        joined = b"\x00".join(chunks)
        leaks: dict[str, Leak] = {}
        opaque: dict[int, Piece] = {}
        for at, encoded in self.compiled.occurrences(joined, starts):
            index = bisect.bisect_right(starts, at) - 1
            piece = Piece(*wheres[index][:4], chunks[index], wheres[index][4])
            if piece.opaque:
                opaque[index] = piece  # look again with its items decoded
                continue
            if piece.place in leaks:
                continue
            for needle in self.compiled.by_bytes[encoded]:
                leak = _decide(piece, needle, encoded, self.produced)
                if leak is not None:
                    leaks[piece.place] = leak
                    break
        for piece in opaque.values():
            for leak in self._look_inside(piece):
                leaks.setdefault(leak.place, leak)
        return [leaks[place] for place in sorted(leaks)]

    def _look_inside(self, piece: Piece) -> list[Leak]:
        """A sequence kept as read holds a needle somewhere: decode it to see where, then put
        the raw element back so it is still written byte for byte."""
        raw = piece.dataset.get_item(piece.tag, keep_deferred=True)
        try:
            inner = list(
                _sequence_pieces(piece.dataset, piece.tag, self.rules, piece.path, self.convert_all)
            )
            return self.run(inner)
        except (ValueError, KeyError, TypeError, EOFError, NotImplementedError):  # undecodable
            where = (piece.dataset, piece.path, piece.tag, "UN", False)
            return self.run([(where, piece.data)])
        finally:
            piece.dataset[piece.tag] = raw


def leaks_in(
    ds: Dataset, needles: NeedleSet | Iterable[str | Needle], rules: RuleSet
) -> list[Leak]:
    """Every place (at most one leak each) where an identifying value of the input survives."""
    encodings = codecs_of(ds)
    # ISO 2022 code extensions switch character sets inside a value: decode those properly
    convert_all = len(encodings) > 1 or any("2022" in e for e in encodings)
    produced = needles.produced_dates if isinstance(needles, NeedleSet) else frozenset()
    compiled = compile_needles(needles, encodings)
    if compiled is None:
        return []
    found = _pieces(ds, rules, "", convert_all)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        found = itertools.chain(found, _pieces(meta, rules, "meta:", convert_all))
    return _Scan(compiled, rules, produced, convert_all).run(found)


def find_leaks(
    ds: Dataset, needles: NeedleSet | Iterable[str | Needle], rules: RuleSet
) -> list[str]:
    """Tag paths (never values) where a needle was found."""
    return [leak.place for leak in leaks_in(ds, needles, rules)]


def verify_release(
    ds: Dataset, needles: NeedleSet | Iterable[str | Needle], rules: RuleSet
) -> None:
    leaks = leaks_in(ds, needles, rules)
    if leaks:
        raise QuarantineError(
            ReasonCode.VERIFICATION_FAILED,
            "an identifying value of the input survives: "
            + "; ".join(leak.describe() for leak in leaks[:MAX_REASONS]),
            stage="verify",
        )
