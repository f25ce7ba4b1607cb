"""What we know about the patient of the payload: the linked deny-list for free text."""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass, field

MIN_TERM_LENGTH = 3
GENERIC_TERMS = frozenset(
    {"ANONYMOUS", "ANONYMIZED", "UNKNOWN", "NONE", "NULL", "N/A", "NA", "TEST", "YES", "NO"}
)


@dataclass
class PhiContext:
    """Identifiers of one patient/instance. Terms are stored upper-cased and stripped."""

    names: set[str] = field(default_factory=set)
    identifiers: set[str] = field(default_factory=set)
    dates: set[dt.date] = field(default_factory=set)
    other: set[str] = field(default_factory=set)

    def add_name(self, value: str) -> None:
        """Add a person name (DICOM PN ``Family^Given^Middle`` or free form) and its parts."""
        text = str(value).replace("=", "^")
        parts = [p for p in re.split(r"[\^,\s]+", text) if p]
        whole = " ".join(parts)
        for term in [whole, *parts, " ".join(reversed(parts[:2]))]:
            self._add(self.names, term)

    def add_identifier(self, value: str) -> None:
        self._add(self.identifiers, value)

    def add_other(self, value: str) -> None:
        self._add(self.other, value)

    def add_address(self, value: str) -> None:
        """Add an address and each part a text may write alone: the street (with and without
        its house number), the city, the ZIP code (ZIP+4 and its 5 digits). Parts are split on
        DICOM/HL7 component separators, commas, semicolons and line breaks."""
        self._add(self.other, value)
        for part in address_parts(str(value)):
            self._add(self.other, part)

    def is_empty(self) -> bool:
        return not (self.names or self.identifiers or self.dates or self.other)

    def frozen(self) -> tuple[frozenset[str], frozenset[str], frozenset[dt.date], frozenset[str]]:
        """An immutable snapshot: the cache key of a text cleaned in this context (exact, so
        two patients never share a cached result)."""
        return (
            frozenset(self.names),
            frozenset(self.identifiers),
            frozenset(self.dates),
            frozenset(self.other),
        )

    def add_date(self, value: dt.date) -> None:
        self.dates.add(value)

    def merge(self, other: PhiContext) -> None:
        self.names |= other.names
        self.identifiers |= other.identifiers
        self.dates |= other.dates
        self.other |= other.other

    @staticmethod
    def _add(target: set[str], value: str) -> None:
        term = " ".join(str(value).split()).upper()
        if len(term) >= MIN_TERM_LENGTH and term not in GENERIC_TERMS:
            target.add(term)

    def terms(self) -> dict[str, set[str]]:
        """Deny-list terms by entity type (dates rendered in the common written forms)."""
        dates: set[str] = set()
        for day in self.dates:
            dates.update(date_renderings(day))
        return {
            "PERSON": self.names,
            "ID": self.identifiers,
            "DATE_TIME": dates,
            "OTHER": self.other,
        }


_ADDRESS_SPLIT = re.compile(r"[\^\r\n;,]+")
_ZIP_AT_END = re.compile(r"^(?P<rest>.*?)[\s,]*\b(?P<zip>\d{5})(?P<plus4>-\d{4})?$")
_HOUSE_NUMBER = re.compile(r"^\d+[A-Za-z]?(?:-\d+)?\s+(?P<street>.+)$")
_STATE_AT_END = re.compile(r"\s+[A-Za-z]{2}$")


@functools.lru_cache(maxsize=4096)
def address_parts(value: str) -> tuple[str, ...]:
    """The parts of one address a text may write on their own (see :meth:`add_address`).
    Cached: a patient's and an institution's address repeat on every instance."""
    parts: list[str] = []
    for raw in _ADDRESS_SPLIT.split(value):
        part = " ".join(raw.split())
        if not part:
            continue
        zip_match = _ZIP_AT_END.match(part)
        if zip_match:
            parts.append(zip_match.group("zip"))
            if zip_match.group("plus4"):
                parts.append(zip_match.group("zip") + zip_match.group("plus4"))
            part = _STATE_AT_END.sub("", zip_match.group("rest")).strip()  # "IL 62704"
            if len(part) <= 2:
                continue
        parts.append(part)
        street = _HOUSE_NUMBER.match(part)
        if street and (" " in street.group("street") or len(street.group("street")) >= 6):
            parts.append(street.group("street"))
    return tuple(parts)


def date_renderings(day: dt.date) -> set[str]:
    """The ways a date is commonly written in reports and burned-in text."""
    return {
        day.strftime("%Y%m%d"),
        day.strftime("%Y-%m-%d"),
        day.strftime("%d/%m/%Y"),
        day.strftime("%m/%d/%Y"),
        day.strftime("%d.%m.%Y"),
        day.strftime("%Y/%m/%d"),
        day.strftime("%d-%b-%Y").upper(),
        day.strftime("%b %d, %Y").upper(),
        f"{day.month}/{day.day}/{day.year}",
    }
