"""Recognizers and their registry.

A recognizer finds spans of one or more entity types. Each declares ``is_available()`` and the
package that is missing otherwise, so an unavailable engine is reported, never silently skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from gateway.text.context import PhiContext
from gateway.text.dates import find_dates
from gateway.text.spans import MaskedText, Span, merge_spans


class Recognizer(Protocol):
    name: str
    entities: tuple[str, ...]

    def is_available(self) -> bool: ...

    def missing_dependency(self) -> str | None: ...

    def find(self, text: str, context: PhiContext) -> list[Span]: ...


class DenyListRecognizer:
    """The patient's own identifiers (linked deny-list), matched case-insensitively on word
    boundaries, in the forms a text writes them differently from the header:

    * names and other terms: separators between parts may vary (``DOE^JOHN``, ``Doe, John``);
    * identifiers: with or without the separator between prefix and number (``MRN4471932``,
      ``MRN 4471932``), the number alone, leading zeros added or dropped;
    * numbers of 7+ digits (phones, numeric IDs): any punctuation or none between the digits
      (``555-867-5309``, ``(555) 867 5309``, ``5558675309``, ``+1 555 867 5309``);
    * dates: every written form that *reads* as the day (:mod:`gateway.text.dates`).
    """

    name = "deny-list"
    entities: tuple[str, ...] = ("PERSON", "ID", "DATE_TIME", "OTHER")

    def is_available(self) -> bool:
        return True

    def missing_dependency(self) -> str | None:
        return None

    def find(self, text: str, context: PhiContext) -> list[Span]:
        spans: list[Span] = []
        for entity, terms in context.terms().items():
            if not terms:
                continue
            pattern = _term_pattern(entity, frozenset(terms))
            spans.extend(Span(m.start(), m.end(), entity) for m in pattern.finditer(text))
        if context.dates:
            spans.extend(
                Span(m.start, m.end, "DATE_TIME")
                for m in find_dates(text)
                if any(r.means(day) for r in m.readings for day in context.dates)
            )
        return spans


_PATTERN_CACHE: dict[tuple[str, frozenset[str]], re.Pattern[str]] = {}
_RUNS = re.compile(r"[^\W\d_]+|\d+")
MIN_CORE_DIGITS = 5  # the number of an identifier alone is specific enough from 5 digits
MIN_FLEX_DIGITS = 7  # phones and long numbers: punctuation between digits varies
_DIGIT_GAP = r"[\s().+/-]{0,3}"
_RUN_GAP = r"[\s:#/._-]*"


def _alternatives(entity: str, term: str) -> list[str]:
    """Regex alternatives for one term (see :class:`DenyListRecognizer`)."""
    digits = re.sub(r"\D", "", term)
    if len(digits) >= MIN_FLEX_DIGITS and not re.search(r"[^\W\d_]", term):
        found = [_DIGIT_GAP.join(digits)]
        if len(digits) > 10:  # a country code written or not
            found.append(_DIGIT_GAP.join(digits[-10:]))
        return found
    if entity == "ID":
        runs = _RUNS.findall(term)
        if not runs:
            return [re.escape(term)]
        pieces = [re.escape(r) for r in runs]
        if runs[0].isdigit():  # leading zeros written or dropped
            pieces[0] = "0*" + re.escape(runs[0].lstrip("0") or "0")
        found = [_RUN_GAP.join(pieces)]
        core = runs[-1].lstrip("0")
        if runs[-1].isdigit() and len(core) >= MIN_CORE_DIGITS and len(runs) > 1:
            found.append("0*" + core)  # MRN4471932 written 4471932
        return found
    pieces = [re.escape(p) for p in re.split(r"[\s^,]+", term) if p]
    return [r"[\s^,.]+".join(pieces)] if pieces else []


def _term_pattern(entity: str, terms: frozenset[str]) -> re.Pattern[str]:
    key = (entity, terms)
    pattern = _PATTERN_CACHE.get(key)
    if pattern is None:
        alternatives = []
        for term in sorted(terms, key=len, reverse=True):
            alternatives.extend(_alternatives(entity, term))
        pattern = re.compile(
            r"(?<![A-Za-z0-9])(?:" + "|".join(alternatives) + r")(?![A-Za-z0-9])", re.IGNORECASE
        )
        if len(_PATTERN_CACHE) > 4096:
            _PATTERN_CACHE.clear()
        _PATTERN_CACHE[key] = pattern
    return pattern


@dataclass(frozen=True)
class RegexRule:
    entity: str
    pattern: re.Pattern[str]


REGEX_RULES: tuple[RegexRule, ...] = (
    RegexRule("EMAIL_ADDRESS", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")),
    RegexRule("US_SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    RegexRule(
        "PHONE_NUMBER",
        re.compile(r"(?<![\w.])(?:\+?\d{1,3}[\s.-])?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?![\w.])"),
    ),
    RegexRule(
        "DATE_TIME",
        re.compile(
            r"\b(?:\d{1,2}[/.-]\d{1,2}[/.-](?:19|20)\d{2}|(?:19|20)\d{2}[/.-]\d{1,2}[/.-]\d{1,2}"
            r"|\d{1,2}[- ](?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[a-z]*[- ,]+"
            r"(?:19|20)\d{2})\b",
            re.IGNORECASE,
        ),
    ),
    RegexRule("URL", re.compile(r"\bhttps?://\S+", re.IGNORECASE)),
    RegexRule("IP_ADDRESS", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b(?!\.\d)")),
)


class PatternRecognizer:
    """Identifier shapes that are PHI whoever they belong to (Safe Harbor: phones, emails, SSN,
    dates, URLs, IP addresses)."""

    name = "patterns"
    entities = tuple(sorted({rule.entity for rule in REGEX_RULES}))

    def is_available(self) -> bool:
        return True

    def missing_dependency(self) -> str | None:
        return None

    def find(self, text: str, context: PhiContext) -> list[Span]:
        return [
            Span(m.start(), m.end(), rule.entity)
            for rule in REGEX_RULES
            for m in rule.pattern.finditer(text)
        ]


class RecognizerRegistry:
    """Recognizers registered explicitly, run together; spans merged."""

    def __init__(self) -> None:
        self._recognizers: list[Recognizer] = []

    def register(self, recognizer: Recognizer) -> None:
        if not recognizer.is_available():
            raise RuntimeError(
                f"recognizer '{recognizer.name}' is unavailable: install "
                f"{recognizer.missing_dependency()}"
            )
        self._recognizers.append(recognizer)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._recognizers]

    def find(self, text: str, context: PhiContext) -> list[Span]:
        """Every recognizer's spans, merged. A recognizer that declares ``masked = True`` (an
        NLP model behind a per-text cache) gets the text with the spans found before it
        replaced by a placeholder (:class:`~gateway.text.spans.MaskedText`)."""
        spans: list[Span] = []
        for recognizer in self._recognizers:
            if getattr(recognizer, "masked", False) and spans:
                masked = MaskedText(text, spans)
                spans.extend(masked.original(s) for s in recognizer.find(masked.text, context))
            else:
                spans.extend(recognizer.find(text, context))
        return merge_spans(spans)


def default_registry() -> RecognizerRegistry:
    """Deny-list + patterns: fast, dependency-free; NLP recognizers are added by their owners."""
    registry = RecognizerRegistry()
    registry.register(DenyListRecognizer())
    registry.register(PatternRecognizer())
    return registry
