"""The parts of the patient's values that must not stay readable after redaction.

A box that covers ``DOB 12/0`` of ``DOB 12/03/1961`` leaves the month and the year readable,
and a search for the whole token no longer finds them. So verification looks for *parts*:
each component of a date (day, month as a number or a name, year), each token of a name, and
every run of three digits taken from an identifier (and from a year). OCR text is cut into
runs of letters and digits first (separators ``/ - . ,`` and spaces split), so ``/03/1961.``
yields ``03`` and ``1961``; letters are compared folded as the deny-list folds them (``D0E``).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

from gateway.pixels.fuzzy import _distance, collapse, max_edits
from gateway.text import PhiContext

DIGIT_RUN = 3  # digits of an identifier (or a year) that may not stay readable together
MIN_NAME_TOKEN = 2
MIN_PIECE = 4  # letters of a long name token left readable (``MPSON`` of ``SIMPSON``)
SHORT_RUN_CONFIDENCE = 50.0  # a lone glyph (``3``) counts only when OCR is fairly sure of it
_CHUNKS = re.compile(r"[A-Za-z0-9|!]+")
_DIGIT_RUNS = re.compile(r"[0-9OoIlSB|]*[0-9][0-9OoIlSB|]*")
_AS_DIGITS = str.maketrans({"O": "0", "o": "0", "I": "1", "l": "1", "|": "1", "S": "5", "B": "8"})


@dataclass(frozen=True)
class ValueParts:
    """What of the context counts as a part, each with its entity type: collapsed words,
    small numbers (matched as whole runs), digit windows (matched anywhere in a run)."""

    words: dict[str, str]  # name tokens, month names, letters of identifiers (collapsed)
    numbers: dict[int, str]  # days, months, two-digit years
    windows: dict[str, str]  # every DIGIT_RUN-digit window of identifiers and years

    @staticmethod
    def from_context(context: PhiContext) -> ValueParts:
        words: dict[str, str] = {}
        numbers: dict[int, str] = {}
        windows: dict[str, str] = {}
        for entity, values in (("PERSON", context.names), ("OTHER", context.other)):
            for value in values:
                for token in map(collapse, re.split(r"[\s^,]+", value)):
                    if len(token) >= MIN_NAME_TOKEN:
                        words.setdefault(token, entity)
        for identifier in context.identifiers:
            for run in re.findall(r"[0-9]+", identifier):
                windows.update(dict.fromkeys(_windows(run), "ID"))
            for letters in map(collapse, re.findall(r"[A-Za-z]+", identifier)):
                if len(letters) >= 3:
                    words.setdefault(letters, "ID")
        for day in context.dates:
            numbers.update(dict.fromkeys((day.day, day.month, day.year % 100), "DATE_TIME"))
            windows.update(dict.fromkeys(_windows(f"{day.year:04d}"), "DATE_TIME"))
            for month in (calendar.month_name[day.month], calendar.month_abbr[day.month]):
                words.setdefault(collapse(month), "DATE_TIME")
        return ValueParts(words, numbers, windows)

    def __bool__(self) -> bool:
        return bool(self.words or self.numbers or self.windows)

    def found_in(self, text: str, confidence: float = 100.0) -> str | None:
        """The entity type of a part of a value that OCR word ``text`` shows, if any."""
        chunks = _CHUNKS.findall(text)
        if len(chunks) > 1:  # a lone digit counts alone (``3``, ``3/``), not inside ``3.3``
            confidence = min(confidence, SHORT_RUN_CONFIDENCE - 1)
        for chunk in chunks:
            found = self._word_part(collapse(chunk))  # folded as the names are: D0E is DOE
            for run in _DIGIT_RUNS.findall(chunk):
                found = found or self._number_part(run.translate(_AS_DIGITS), confidence)
            if found is not None:
                return found
        return None

    def _number_part(self, digits: str, confidence: float) -> str | None:
        digits = "".join(ch for ch in digits if ch.isdigit())
        for i in range(len(digits) - DIGIT_RUN + 1):
            if digits[i : i + DIGIT_RUN] in self.windows:
                return self.windows[digits[i : i + DIGIT_RUN]]
        sure = len(digits) == 2 or confidence >= SHORT_RUN_CONFIDENCE
        if 0 < len(digits) <= 2 and sure and int(digits) in self.numbers:
            return self.numbers[int(digits)]
        return None

    def _word_part(self, word: str) -> str | None:
        if len(word) < MIN_NAME_TOKEN:
            return None
        if word in self.words:
            return self.words[word]
        for part, entity in self.words.items():
            if len(part) >= 3 and len(word) > len(part) and part in word:
                return entity  # run together with other glyphs: DOEAJOHN
            if len(word) >= MIN_PIECE and len(part) >= 5 and word in part:
                return entity  # what a box edge left of a long token
            if len(word) >= 5 and _distance(word, part) <= max_edits(len(part)):
                return entity  # read with an error
        return None


def _windows(digits: str) -> set[str]:
    return {digits[i : i + DIGIT_RUN] for i in range(len(digits) - DIGIT_RUN + 1)}
