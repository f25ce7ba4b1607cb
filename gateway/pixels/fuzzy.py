"""Approximate deny-list matching for OCR text.

OCR misreads: ``DOE^JOHN`` comes back as ``DOEAJOHN``, ``0`` as ``O``, ``1`` as ``l``, and long
names are truncated on screen (``PATIENTFI..``). Terms and text are collapsed the same way
(upper case, confusable glyphs folded, separators dropped) and compared with an edit-distance
substring search (Sellers' algorithm, one numpy row per term character).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np

from gateway.text import PhiContext

_FOLD = str.maketrans(
    {
        "0": "O",
        "Q": "O",
        "1": "I",
        "L": "I",
        "|": "I",
        "!": "I",
        "5": "S",
        "8": "B",
        "2": "Z",
        "6": "G",
    }
)
_NON_ALNUM = re.compile(r"[^A-Z0-9|!]+")
SEPARATOR = "\x00" * 4
MIN_PREFIX = 5


def collapse(text: str) -> str:
    """Upper-case, drop separators, fold glyphs OCR confuses."""
    return _NON_ALNUM.sub("", text.upper()).translate(_FOLD)


def max_edits(length: int) -> int:
    if length <= 4:
        return 0
    if length <= 8:
        return 1
    if length <= 14:
        return 2
    return 3


def extra_date_renderings(day: dt.date) -> set[str]:
    """Short-year and unpadded forms, beyond :func:`gateway.text.context.date_renderings`."""
    return {
        day.strftime("%m/%d/%y"),
        day.strftime("%d/%m/%y"),
        day.strftime("%d.%m.%y"),
        f"{day.day}/{day.month}/{day.year}",
        day.strftime("%d %b %Y"),
        day.strftime("%Y%m%d"),
    }


MIN_FUZZY = 5


@dataclass(frozen=True)
class Term:
    collapsed: str
    entity: str


class DenyIndex:
    """The context's terms, collapsed, ready for approximate search."""

    def __init__(self, context: PhiContext) -> None:
        terms: dict[str, Term] = {}
        parts: set[str] = set()
        for entity, values in context.terms().items():
            for value in values:
                key = collapse(value)
                if len(key) >= 3:
                    terms.setdefault(key, Term(key, entity))
                if entity in ("PERSON", "OTHER"):
                    parts.update(p for p in map(collapse, value.split()) if len(p) > MIN_PREFIX)
        for day in context.dates:
            for value in extra_date_renderings(day):
                key = collapse(value)
                terms.setdefault(key, Term(key, "DATE_TIME"))
        ordered = sorted(terms.values(), key=lambda t: t.collapsed)
        self.terms = tuple(t for t in ordered if len(t.collapsed) >= MIN_FUZZY)
        self._short = {t.collapsed: t.entity for t in ordered if len(t.collapsed) < MIN_FUZZY}
        self._name_parts = tuple(sorted(parts))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def search(self, texts: list[str]) -> dict[int, set[str]]:
        """Indices of ``texts`` that contain a term (approximately), with the entity types."""
        collapsed = [collapse(t) for t in texts]
        joined = SEPARATOR.join(collapsed)
        owners = np.full(len(joined) + 1, -1, dtype=np.int64)
        cursor = 0
        for index, piece in enumerate(collapsed):
            owners[cursor + 1 : cursor + len(piece) + 1] = index
            cursor += len(piece) + len(SEPARATOR)
        hits: dict[int, set[str]] = {}
        if not joined:
            return hits
        codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        for term in self.terms:
            ends = _approximate_ends(term.collapsed, codes, max_edits(len(term.collapsed)))
            for end in ends:
                owner = int(owners[end])
                if owner >= 0:
                    hits.setdefault(owner, set()).add(term.entity)
        for index, text in enumerate(texts):
            for word in re.split(r"[\s^,]+", text):
                entity = self._short.get(collapse(word))
                if entity is not None:
                    hits.setdefault(index, set()).add(entity)
            if self._truncated_name(text):
                hits.setdefault(index, set()).add("PERSON")
        return hits

    def _truncated_name(self, text: str) -> bool:
        """A word that is the start of a long name or institution term (``CLEVELAN..``)."""
        for word in text.split():
            stem = collapse(word)
            if len(stem) < MIN_PREFIX:
                continue
            for part in self._name_parts:
                if len(part) > len(stem) and _distance(stem, part[: len(stem)]) <= max_edits(
                    len(stem)
                ):
                    return True
        return False


def _approximate_ends(pattern: str, codes: np.ndarray, k: int) -> np.ndarray:
    """End positions (1-based into ``codes``) where ``pattern`` matches with <= k edits."""
    n = codes.shape[0]
    offsets = np.arange(n + 1, dtype=np.int32)
    row = np.zeros(n + 1, dtype=np.int32)  # free start anywhere
    for i, char in enumerate(pattern, start=1):
        cost = (codes != ord(char)).astype(np.int32)
        diagonal = row[:-1] + cost
        up = row[1:] + 1
        best = np.empty(n + 1, dtype=np.int32)
        best[0] = i
        best[1:] = np.minimum(diagonal, up)
        # left neighbour (insertion in text): row[j] = min_l best[l] + (j - l)
        row = np.minimum.accumulate(best - offsets) + offsets
    return np.nonzero(row <= k)[0]


def _distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
