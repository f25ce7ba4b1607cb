"""Deciding which OCR'd text is PHI.

``sensitive-only`` (keep "16cm", "TIS 0.5", probe and depth labels): a segment is PHI when the
text recognizers (linked deny-list, Safe Harbor patterns) or the fuzzy deny-list match it, when
it carries an identifier shape (a run of six or more digits, a clock time, a date with a
two-digit year), a name shape (``DOE^JOHN``, ``DOE, JOHN``, ``Dr. Smith``) or an identity label
("DOB", "MRN", "Name:"). The whole segment is redacted, as one box from its first word to its
last (OCR reads names partly, and splits dates at their separators).
``all-text``: every word that reads as text is redacted.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from gateway.pixels.fuzzy import DenyIndex
from gateway.pixels.model import Box, TextMode, TextSegment, Word
from gateway.text import PhiContext, RecognizerRegistry, default_registry

_LONG_NUMBER = re.compile(r"(?<![A-Za-z])[0-9OoIl]{6,}(?![A-Za-z])")
# names as screens write them, whoever they belong to: "DOE^JOHN", "DOE, JOHN", "Dr. Smith"
_NAME_SHAPE = re.compile(
    r"(?<![\w])[A-Z][A-Z'-]{1,}\s?[\^,]\s?[A-Z][A-Z'-]{1,}(?![\w.])|\bDR\.?\s+[A-Z][a-z]+",
    re.IGNORECASE,
)
_SHORT_DATE = re.compile(r"(?<![\d/.-])\d{1,2}[/.-]\d{1,2}[/.-]\d{2}(?![\d/.-])")
_TIME = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\s*(?:[AP]\.?M\.?)?(?![\d.%])", re.IGNORECASE)
_LABELS = re.compile(
    r"\b(?:DOB|D\.O\.B|MRN|PID|SSN|NAME|PATIENT|PAT|BIRTH|BORN|ACC(?:ESSION)?|ID)\b\s*[:#.]?",
    re.IGNORECASE,
)
ALL_TEXT_MIN_CONFIDENCE = 50.0
_JOIN = "\n\u00a7\n"  # between segments: no recognizer pattern spans a section sign


@dataclass(frozen=True)
class PhiFinding:
    """A segment judged PHI: the boxes of its words (rendering coordinates), redacted as one
    span from the first to the last (``detect.span_box``), and entity types."""

    boxes: tuple[Box, ...]
    entities: tuple[str, ...]


class OcrPhiClassifier:
    """Applies a mode to OCR segments; built once per process, used per instance."""

    def __init__(self, mode: TextMode, registry: RecognizerRegistry | None = None) -> None:
        self.mode = mode
        self.registry = registry or default_registry()

    def find(
        self, segments: list[TextSegment], context: PhiContext, index: DenyIndex | None = None
    ) -> list[PhiFinding]:
        if self.mode is TextMode.ALL_TEXT:
            return [
                PhiFinding((word.box,), ("TEXT",))
                for segment in segments
                for word in segment.words
                if _reads_as_text(word)
            ]
        return self.sensitive(segments, context, index)

    def sensitive(
        self, segments: list[TextSegment], context: PhiContext, index: DenyIndex | None = None
    ) -> list[PhiFinding]:
        deny = index if index is not None else DenyIndex(context)
        texts = [segment.text for segment in segments]
        fuzzy_hits = deny.search(texts) if deny else {}
        recognised = self._recognise(texts, context)
        findings: list[PhiFinding] = []
        for i, (segment, text) in enumerate(zip(segments, texts)):
            entities = set(fuzzy_hits.get(i, set())) | recognised.get(i, set())
            if any(sum(c.isdigit() for c in m.group()) >= 4 for m in _LONG_NUMBER.finditer(text)):
                entities.add("ID")
            if _NAME_SHAPE.search(text):
                entities.add("PERSON")
            if _SHORT_DATE.search(text):
                entities.add("DATE_TIME")
            if _TIME.search(text):
                entities.add("DATE_TIME")
            if _LABELS.search(text):
                entities.add("LABEL")
            if entities:
                findings.append(
                    PhiFinding(tuple(w.box for w in segment.words), tuple(sorted(entities)))
                )
        return findings

    def _recognise(self, texts: list[str], context: PhiContext) -> dict[int, set[str]]:
        """One registry call for all segments (an NLP recognizer's per-call cost is high)."""
        if not texts:
            return {}
        starts: list[int] = []
        cursor = 0
        for text in texts:
            starts.append(cursor)
            cursor += len(text) + len(_JOIN)
        hits: dict[int, set[str]] = {}
        for span in self.registry.find(_JOIN.join(texts), context):
            first = bisect.bisect_right(starts, span.start) - 1
            last = bisect.bisect_right(starts, max(span.start, span.end - 1)) - 1
            for i in range(max(first, 0), last + 1):
                hits.setdefault(i, set()).add(span.entity)
        return hits


def _reads_as_text(word: Word) -> bool:
    alnum = sum(ch.isalnum() for ch in word.text)
    if alnum == 0:
        return False
    return alnum >= 3 or word.confidence >= ALL_TEXT_MIN_CONFIDENCE
