"""Dates as people write them: found in text and read into the calendar days they may mean.

A header keeps one form (``19610312``); reports and descriptors write the same day as
``12 March 1961``, ``March 12, 1961``, ``12-Mar-61``, ``12.03.1961`` or ``1961/03/12``. Matching
the patient's dates by *reading* each written date (rather than by a list of renderings) finds
every separator, month spelling, ordinal and two-digit year. An ambiguous numeric date
(``03/12/1961``) stands for both day-month orders.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DAY = r"(?:[0-2]?\d|3[01])(?:st|nd|rd|th)?"
_YEAR = r"(?:(?:19|20)\d{2}|'?\d{2})"
_GAP = r"[\s.,/-]*"


@dataclass(frozen=True)
class Reading:
    """One way to read a written date; ``year`` has two digits when ``short_year``."""

    year: int
    month: int
    day: int
    short_year: bool

    def means(self, day: dt.date) -> bool:
        year = day.year % 100 if self.short_year else day.year
        return (self.year, self.month, self.day) == (year, day.month, day.day)


@dataclass(frozen=True)
class DateMention:
    start: int
    end: int
    readings: tuple[Reading, ...]
    spelled: bool  # the month is a word: unmistakably a date, whoever's it is


def _number(text: str) -> int:
    return int(re.sub(r"\D", "", text))


def _year(text: str) -> tuple[int, bool]:
    digits = text.lstrip("'")
    return int(digits), len(digits) == 2


def _day_month_year(groups: dict[str, str]) -> list[Reading]:
    year, short = _year(groups["y"])
    month = MONTHS[groups["m"][:3].lower()]
    return [Reading(year, month, _number(groups["d"]), short)]


def _numeric(groups: dict[str, str]) -> list[Reading]:
    first, second, third = groups["a"], groups["b"], groups["c"]
    if len(first) == 4:
        return [Reading(int(first), int(second), int(third), False)]
    year, short = _year(third)
    return [
        Reading(year, int(second), int(first), short),  # day first (12.03.1961)
        Reading(year, int(first), int(second), short),  # month first (03/12/1961)
    ]


def _compact(groups: dict[str, str]) -> list[Reading]:
    digits = groups["n"]
    return [
        Reading(int(digits[:4]), int(digits[4:6]), int(digits[6:]), False),  # YYYYMMDD
        Reading(int(digits[4:]), int(digits[2:4]), int(digits[:2]), False),  # DDMMYYYY
        Reading(int(digits[4:]), int(digits[:2]), int(digits[2:4]), False),  # MMDDYYYY
    ]


Reader = Callable[[dict[str, str]], list[Reading]]
_END = r"(?![\w.]?\d)"
_SPELLED_DMY = re.compile(
    rf"(?<![\w'])(?P<d>{_DAY})(?:\s+of)?{_GAP}(?P<m>{_MONTH})\.?{_GAP}(?P<y>{_YEAR}){_END}",
    re.IGNORECASE,
)
_SPELLED_MDY = re.compile(
    rf"(?<![\w'])(?P<m>{_MONTH})\.?{_GAP}(?P<d>{_DAY})[\s.,/-]+(?P<y>{_YEAR}){_END}",
    re.IGNORECASE,
)
_SPELLED_YMD = re.compile(
    rf"(?<![\w'])(?P<y>(?:19|20)\d{{2}}){_GAP}(?P<m>{_MONTH})\.?{_GAP}(?P<d>{_DAY}){_END}",
    re.IGNORECASE,
)
_NUMERIC = re.compile(
    r"(?<![\w.])(?P<a>\d{1,2}|\d{4})(?P<s>[./-])(?P<b>\d{1,2})(?P=s)(?P<c>\d{4}|\d{2})(?!\w|\.\d)"
)
_COMPACT = re.compile(r"(?<![\w.])(?P<n>\d{8})(?!\w|\.\d)")
_FORMS: tuple[tuple[re.Pattern[str], bool, Reader], ...] = (
    (_SPELLED_DMY, True, _day_month_year),
    (_SPELLED_MDY, True, _day_month_year),
    (_SPELLED_YMD, True, _day_month_year),
    (_NUMERIC, False, _numeric),
    (_COMPACT, False, _compact),
)


def find_dates(text: str) -> Iterator[DateMention]:
    """Every written date in ``text`` with its possible readings (invalid ones included: the
    caller compares them with real days, so a reading that is no day never matches)."""
    for pattern, spelled, read in _FORMS:
        for match in pattern.finditer(text):
            readings = read(match.groupdict())
            yield DateMention(match.start(), match.end(), tuple(readings), spelled)
