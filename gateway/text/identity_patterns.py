"""Identifiers of *anyone* by their written shape and cue words: no patient context needed.

The deny-list finds the patient's own identity; these rules find what the header never names:
a street address, a ZIP code after a state or "ZIP", an institution ("Saint Mercy Memorial
Hospital"), an MRN, member or policy number after its cue word, a card number (Luhn-checked),
a person after a title or a relation ("Dr. Albert Finch", "mother Jane Roe", "REFERRED BY
ALBERT FINCH") and dates with a spelled month. Each rule is a row of :data:`RULES`: an entity,
a pattern, the group that is the identifier and a check that may trim or refuse the match (so
"MOTHER HAS DIABETES" and "Oncology Clinic" stay).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.text.context import PhiContext
from gateway.text.dates import find_dates
from gateway.text.spans import Span
from gateway.text.vocabulary import FUNCTION_WORDS, is_clinical_token, words


def _forms(words: str) -> str:
    """Title and upper-case forms of each word, as one alternation (longest first)."""
    found = {f for w in words.split() for f in (w, w.upper())}
    return "|".join(sorted((re.escape(f) for f in found), key=len, reverse=True))


_CAPWORD = r"[A-Z][A-Za-z'\u2019.-]*"
_STREET_SUFFIXES = _forms(
    "Street Avenue Ave Road Rd Boulevard Blvd Lane Ln Drive Court Terrace Ter Place Way Parkway "
    "Pkwy Circle Cir Highway Hwy Square Sq Plaza Alley Trail Trl Crescent Gardens Heights Hollow "
    "Crossing Junction Manor Meadow Meadows Ridge Grove Glen Knoll Gateway Ferry Byway Bypass "
    "Causeway Expressway Freeway Turnpike Landing Harbor Haven Mews Estates Village Vista Hill "
    "Hills Creek Brook Park Wynd Cove Mill Mills"
)
_STREET = re.compile(
    r"(?<![\w-])(?P<x>\d{1,6}[A-Za-z]?(?:-\d{1,4})?\s+"
    r"(?:(?:[NSEW]|N[EW]|S[EW]|North|South|East|West|NORTH|SOUTH|EAST|WEST)\.?\s+)?"
    rf"(?:(?:{_CAPWORD}|\d{{1,3}}(?:st|nd|rd|th|ST|ND|RD|TH))\s+){{1,4}}?"
    rf"(?:{_STREET_SUFFIXES}|(?:Dr|St|Ct|Pl)\b\.?)(?![\w-])"
    r"(?:,?\s*(?:Apt|APT|Apartment|APARTMENT|Suite|SUITE|Ste|STE|Unit|UNIT|#)\.?\s*#?[\w-]+)?)"
)
_STATE_CODES = words(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
    "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI"
)
_STATE_NAMES = _forms(
    "Alabama Alaska Arizona Arkansas California Colorado Connecticut Delaware Florida Georgia "
    "Hawaii Idaho Illinois Indiana Iowa Kansas Kentucky Louisiana Maine Maryland Massachusetts "
    "Michigan Minnesota Mississippi Missouri Montana Nebraska Nevada Ohio Oklahoma Oregon "
    "Pennsylvania Tennessee Texas Utah Vermont Virginia Washington Wisconsin Wyoming"
)
_ZIP = r"(?P<x>\d{5}(?:-\d{4})?)(?![\w-])"
_STATE_PHRASES = "|".join(
    rf"{first}\s+{second}"
    for phrase in (
        "New Hampshire", "New Jersey", "New Mexico", "New York", "North Carolina",
        "North Dakota", "Rhode Island", "South Carolina", "South Dakota", "West Virginia",
    )
    for first, second in (phrase.split(), phrase.upper().split())
)  # fmt: skip
_ZIP_AFTER_STATE = re.compile(
    rf"(?P<w>{_CAPWORD}),?\s+(?:{_STATE_PHRASES}|{'|'.join(_STATE_CODES)}|{_STATE_NAMES})\.?,?\s+{_ZIP}"
)
_ZIP_AFTER_CUE = re.compile(
    rf"(?i:\b(?:zip(?:\s*code)?|postal\s*code|post\s*code))\s*[:#]?\s*{_ZIP}"
)

_INSTITUTION_WORDS = _forms(
    "Hospital Hospitals Infirmary Institute University College Hospice Sanatorium Sanitarium "
    "Clinic Clinics Healthcare Memorial Foundation Associates"
)
_INSTITUTION_PHRASES = "|".join(
    rf"(?:{_forms(first)})\s+(?:{_forms(second)})"
    for first, second in (
        ("Medical Health Imaging Cancer Surgical Radiology Rehabilitation", "Center Centre"),
        ("Health Medical", "System Systems Network Alliance Group Partners Care"),
        ("Nursing Care", "Home Facility"),
    )
)
_INSTITUTION_VOCABULARY = words(
    "hospital hospitals infirmary institute university college hospice sanatorium sanitarium "
    "clinic clinics healthcare memorial foundation associates medical health imaging cancer "
    "surgical radiology rehabilitation center centre system systems network alliance group "
    "partners care nursing home facility saint st mount mt outside local other another prior "
    "previous referring community regional county general"
)
_ONE_KEYWORD = rf"(?:{_INSTITUTION_PHRASES}|{_INSTITUTION_WORDS})(?![\w-])"
_KEYWORD = rf"{_ONE_KEYWORD}(?:\s+{_ONE_KEYWORD})*"
_KEYWORD_WORD = re.compile(rf"^(?:{_INSTITUTION_WORDS}|Center|Centre|CENTER|CENTRE)$")
_CONNECT = r"(?:\s+(?:and|AND|&|of|OF|the|THE)\s+|\s+|-)"
_INSTITUTION = re.compile(
    rf"(?P<x>(?:(?:{_CAPWORD}){_CONNECT}){{1,6}}?{_KEYWORD}"
    rf"(?:\s+(?:of|for|OF|FOR)\s+(?:(?:the|THE)\s+)?{_CAPWORD}(?:\s+{_CAPWORD}){{0,3}})?"
    rf"|{_KEYWORD}\s+(?:of|for|OF|FOR)\s+(?:(?:the|THE)\s+)?{_CAPWORD}"
    rf"(?:(?:\s+(?:of|OF|the|THE))*\s+{_CAPWORD}){{0,3}})"
)
_ID_CUES = (
    r"MRN|MR\s*#|MR\s+(?:no|number)|medical\s+record(?:\s+(?:number|no|#))?|record\s*(?:number|no|#)"
    r"|chart\s*(?:number|no|#)|patient\s*(?:id|number|no|#)|pt\.?\s*(?:id|#)|ID\s*[#:]"
    r"|acc(?:ount|t)?\.?\s*(?:number|no|#)|account|accession(?:\s*(?:number|no|#))?"
    r"|member\s*(?:id|number|no|#)|subscriber\s*(?:id|number|no|#)|policy\s*(?:id|number|no|#)?"
    r"|group\s*(?:id|number|no|#)|insurance\s*(?:id|number|no|#)|medica(?:id|re)\s*(?:id|number|no|#)?"
    r"|beneficiary\s*(?:id|number|no|#)|health\s*plan\s*(?:id|number|no|#)|nhs\s*(?:number|no|#)?"
    r"|card\s*(?:number|no|#)|licen[cs]e\s*(?:number|no|#)|passport\s*(?:number|no|#)?"
    r"|social\s+security(?:\s*(?:number|no|#))?|ssn"
)
_ANCHORED_ID = re.compile(
    rf"(?i:\b(?:{_ID_CUES}))\.?\s*(?:(?:is|was)\s+)?[:#=-]?\s*"
    r"(?P<x>(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{2,}[A-Za-z0-9])(?![\w-])"
)
_CARD = re.compile(r"(?<![\d-])(?P<x>\d(?:[ -]?\d){12,18})(?![\d-])")
_NAME_TOKEN = r"(?:[A-Z][a-z'\u2019-]+|[A-Z]{2,}(?:['\u2019-][A-Z]+)?|[A-Z]\.)"
_NAME = rf"(?P<x>{_NAME_TOKEN}(?:[\s^,]+{_NAME_TOKEN}){{0,2}})"
_TITLE_CUE = re.compile(
    rf"(?:\b(?:Dr|Drs|Prof|Mr|Mrs|Ms|Mx|Miss|Doctor|DOCTOR)\b\.?|\b(?:DR|PROF|MRS|MR)\.)\s+{_NAME}"
)
_RELATION_CUES = (
    r"mother|father|mom|dad|wife|husband|son|daughter|sister|brother|spouse|partner|guardian"
    r"|grand(?:mother|father|son|daughter)|aunt|uncle|niece|nephew|cousin|fianc[e\u00e9]e?"
    r"|next\s+of\s+kin|nok|emergency\s+contact|(?:referred|ordered|read|reported|dictated|signed"
    r"|reviewed|seen|performed|interpreted|verified|approved)\s+by"
    r"|(?:referring|ordering|attending|primary\s+care)\s+(?:physician|doctor|provider|md)|pcp"
)
_RELATION_CUE = re.compile(
    rf"(?i:\b(?:{_RELATION_CUES})\b)(?:\s*[:,-]\s*|\s+)(?:(?:is|was|named|IS|WAS)\s+)?{_NAME}"
)
NOT_A_NAME = words(
    "has had have is was were are be been deceased alive living died notified aware present "
    "reports reported states stated called informed history hx not no none unknown bedside "
    "requests requested declined consented signed agrees agreed who also patient pt md do rn "
    "np pa phd jr sr ii iii iv mrn id dob age sex male female today tomorrow yesterday "
    "outside hospital clinic team service office staff self family home gp ems ambulance police "
    "primary physician doctor provider nurse surgeon radiologist technologist resident fellow "
    "specialist school employer insurance"
)
_CUT_WORDS = words("at from to by in on with for via seen sent transferred")


def _whole(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    return match.span("x")


def _zip_after_city(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    """A ZIP after "City, ST": the word before the state is a place, not "Chest PA 12345"."""
    if is_clinical_token(match.group("w")):
        return None
    return match.span("x")


def _luhn(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    start, end = match.span("x")
    digits = [int(c) for c in text[start:end] if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return None
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return (start, end) if total % 10 == 0 else None


def _word_spans(text: str, start: int, end: int) -> list[tuple[str, int, int]]:
    return [
        (m.group(0), start + m.start(), start + m.end())
        for m in re.finditer(r"[^\W_]+(?:['\u2019.-][^\W_]+)*\.?", text[start:end])
    ]


def _person(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    """The name words after a cue, up to the first word that is not a name."""
    start, end = match.span("x")
    last = None
    for word, _, word_end in _word_spans(text, start, end):
        bare = word.rstrip(".").lower()
        if (
            bare in NOT_A_NAME
            or bare in FUNCTION_WORDS
            or (len(bare) > 1 and is_clinical_token(bare))
        ):
            break
        last = word_end
    if last is None or last - start < 2:
        return None
    return start, last


def _institution(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    """Trim the words before the name ("SEEN AT", "Oncology") and a clinical tail ("for MRI"),
    and refuse a name made only of clinical words and institution keywords ("Radiology
    Associates", "Pain Clinic")."""
    start, end = match.span("x")
    words = _word_spans(text, start, end)
    first = next((i for i, (w, _, _) in enumerate(words) if _KEYWORD_WORD.match(w)), len(words))
    cut = max(
        (i + 1 for i, (w, _, _) in enumerate(words[:first]) if w.lower() in _CUT_WORDS), default=0
    )
    words = words[cut:]
    while words and is_clinical_token(words[0][0]) and not _KEYWORD_WORD.match(words[0][0]):
        words = words[1:]
    last = max((i for i, (w, _, _) in enumerate(words) if _KEYWORD_WORD.match(w)), default=-1)
    if last >= 0 and all(_generic(w) for w, _, _ in words[last + 1 :]):
        words = words[: last + 1]  # "... Center for MRI": the tail is not part of the name
    if not any(not _generic(w) for w, _, _ in words):
        return None
    return words[0][1], words[-1][2]


def _generic(word: str) -> bool:
    bare = word.rstrip(".").lower()
    return bare in _INSTITUTION_VOCABULARY or is_clinical_token(bare)


Check = Callable[[str, "re.Match[str]"], "tuple[int, int] | None"]


@dataclass(frozen=True)
class CueRule:
    entity: str
    pattern: re.Pattern[str]
    check: Check = _whole


RULES: tuple[CueRule, ...] = (
    CueRule("STREET_ADDRESS", _STREET),
    CueRule("ZIP_CODE", _ZIP_AFTER_STATE, _zip_after_city),
    CueRule("ZIP_CODE", _ZIP_AFTER_CUE),
    CueRule("ORGANIZATION", _INSTITUTION, _institution),
    CueRule("ID", _ANCHORED_ID),
    CueRule("CREDIT_CARD", _CARD, _luhn),
    CueRule("PERSON", _TITLE_CUE, _person),
    CueRule("PERSON", _RELATION_CUE, _person),
)


class IdentityPatternRecognizer:
    """:data:`RULES` plus spelled-month dates ("March 12, 1961", "12-Mar-61"), whoever's."""

    name = "identity-patterns"
    entities = tuple(sorted({rule.entity for rule in RULES} | {"DATE_TIME"}))

    def is_available(self) -> bool:
        return True

    def missing_dependency(self) -> str | None:
        return None

    def find(self, text: str, context: PhiContext) -> list[Span]:
        spans: list[Span] = []
        for rule in RULES:
            for match in rule.pattern.finditer(text):
                found = rule.check(text, match)
                if found is not None:
                    spans.append(Span(found[0], found[1], rule.entity))
        spans.extend(
            Span(m.start, m.end, "DATE_TIME")
            for m in find_dates(text)
            if m.spelled and any(1 <= r.day <= 31 for r in m.readings)
        )
        return spans
