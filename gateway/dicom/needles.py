"""What an identifying value of the input *is*: the release gate decides by kind, not substring.

Every original value the header stage replaces becomes a :class:`Needle` that remembers the
kind of value it is (a person's name, an identifier, a date...) and the tag of the attribute it
came from. The gate (``gateway.pipeline.verify``) looks a needle up only where a value of that
kind can leak: an institution name inside the Manufacturer string or a part of the patient's
name inside a coded term is a coincidence of words, the MRN anywhere is a leak.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import NamedTuple

from pydicom.datadict import keyword_for_tag

# The patient's own names: their parts are needles too (a surname alone identifies in context).
PATIENT_NAME_TAGS = frozenset({0x00100010, 0x00101001, 0x00101005, 0x00101060})


class ValueKind(str, Enum):
    """The kind of an identifying value; the value says it in quarantine reasons."""

    PATIENT_NAME = "patient name"
    NAME_PART = "part of the patient's name"
    PERSON_NAME = "person name"
    PLACEHOLDER = "placeholder text in a name attribute"
    IDENTIFIER = "identifier"
    DATE = "date"
    UID = "instance UID"
    ADDRESS = "address or telephone"
    INSTITUTION = "institution or station"
    OTHER = "identifying value"


# Source attribute -> kind, first match wins (VR tests first, then the keyword).
_KEYWORD_KINDS: tuple[tuple[re.Pattern[str], ValueKind], ...] = (
    (re.compile(r"Address|Telephone|RegionOfResidence|CountryOfResidence"), ValueKind.ADDRESS),
    (re.compile(r"Institution|Station|Department"), ValueKind.INSTITUTION),
    (
        re.compile(r"(ID|IDs|Number|Numbers|Identifier|Locator)$|Issuer|Insurance"),
        ValueKind.IDENTIFIER,
    ),
)
_VR_KINDS = {"UI": ValueKind.UID, "DA": ValueKind.DATE, "DT": ValueKind.DATE}

# Lower-case words that belong in real names ("van der Berg", "bin Said"): not placeholders.
# fmt: off
NAME_PARTICLES = frozenset({
    "van", "von", "der", "den", "de", "da", "di", "del", "della", "du", "le", "la", "bin", "ibn",
    "al", "el", "y", "zu", "ter", "ten", "dos", "das", "st",
})
# fmt: on


@lru_cache(maxsize=4096)
def source_kind(tag: int, vr: str) -> ValueKind:
    """The kind of value an attribute holds, from its tag and VR (PN values: see name_kind)."""
    if tag in PATIENT_NAME_TAGS:
        return ValueKind.PATIENT_NAME
    if vr == "PN":
        return ValueKind.PERSON_NAME
    by_vr = _VR_KINDS.get(vr)
    if by_vr is not None:
        return by_vr
    keyword = keyword_for_tag(tag) or ""
    for pattern, kind in _KEYWORD_KINDS:
        if pattern.search(keyword):
            return kind
    return ValueKind.OTHER


# One-word values that name a role or a template slot, not a person (any case).
# fmt: off
ROLE_WORDS = frozenset({
    "operator", "operators", "physician", "doctor", "technician", "technologist", "tech", "user",
    "admin", "administrator", "service", "nobody", "name", "default", "radiologist",
})
# fmt: on


def looks_like_name(text: str) -> bool:
    """A person name is written with component separators, or as capitalised words, or as one
    word (a login such as "jsmith" is a name too); template text left in a name attribute
    ("Enter text", "name here", "operator", "----") is not."""
    if "^" in text:
        return any(ch.isalpha() for ch in text)
    words = [w for w in re.split(r"[\s=.,]+", text) if w]
    if not any(ch.isalpha() for w in words for ch in w):
        return False
    if len(words) == 1:
        return words[0].lower() not in ROLE_WORDS
    return not any(w.isalpha() and w.islower() and w not in NAME_PARTICLES for w in words)


def value_kind(tag: int, vr: str, text: str) -> ValueKind:
    """The kind of one value of an attribute: other persons' names that are no names are
    placeholders (the patient's own name is always a name: its parts are needles too)."""
    kind = source_kind(tag, vr)
    if kind is ValueKind.PERSON_NAME and not looks_like_name(text):
        return ValueKind.PLACEHOLDER
    return kind


class Needle(NamedTuple):
    """One identifying value of the input: its text, what it is, and where it came from.
    (A named tuple: hundreds are made and hashed per instance.)"""

    text: str
    kind: ValueKind
    source: int | None = None  # tag of the attribute it was read from; None: patient context

    @property
    def source_text(self) -> str:
        if self.source is None:
            return "the patient's identifiers"
        return f"({self.source >> 16:04X},{self.source & 0xFFFF:04X})"


@dataclass(frozen=True)
class NeedleSet:
    """The needles of one instance, plus the date values the header stage itself wrote (by
    tag): a shifted date that happens to equal another original date is no leak there.
    ``identifiers``: the patient's identifiers from the header context (source unknown; the
    needle of the replaced attribute names it when both hold the same value)."""

    needles: frozenset[Needle] = frozenset()
    produced_dates: frozenset[tuple[int, str]] = field(default_factory=frozenset)
    identifiers: frozenset[str] = frozenset()

    def __iter__(self) -> Iterator[Needle]:
        """The needles with a source first, then the context identifiers."""
        yield from self.needles
        for identifier in self.identifiers:
            yield Needle(identifier, ValueKind.IDENTIFIER)

    def texts(self) -> set[str]:
        return {n.text for n in self.needles} | set(self.identifiers)


def as_needles(
    values: Iterable[str | Needle], kind: ValueKind = ValueKind.IDENTIFIER
) -> list[Needle]:
    """Plain strings (callers that know no kind) become needles of ``kind``."""
    return [v if isinstance(v, Needle) else Needle(v, kind) for v in values]
