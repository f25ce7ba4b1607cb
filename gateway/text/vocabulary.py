"""Clinical and imaging vocabulary: what an NLP span made only of it cannot be (a name, a place).

Descriptors are short, often upper case and full of acquisition jargon; a small spaCy model
reads "SAG T1 MPRAGE" as a person and "US" as a place. The vocabulary
(``clinical_vocabulary.yaml``, data) lets the text engine (1) skip the model for a text made
only of clinical words and codes, (2) drop spans made only of them, and (3) give the model
upper-case text in title case, the form it recognises names in ("REF DR ALBERT FINCH").
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import yaml

from gateway.text.context import PhiContext
from gateway.text.recognizers import Recognizer
from gateway.text.spans import Span

VOCABULARY_FILE = "clinical_vocabulary.yaml"


def words(text: str) -> frozenset[str]:
    """The words of a space-separated list (tables of words stay readable as prose)."""
    return frozenset(text.split())


FUNCTION_WORDS = words(
    "a an and the of for to at by in on with from or as is was per vs via no not"
)
_JOINERS = re.compile(r"[-/']")
_TOKEN = re.compile(r"[^\W_]+(?:['/-][^\W_]+)*")
_CODE = re.compile(r"^(?:[^\W\d_]?\d[\w.]{0,5}|\d+(?:[.,]\d+)?[^\W\d_]{0,3}|[^\W\d_])$")


@functools.cache
def vocabulary() -> frozenset[str]:
    """Every listed word, lower case (read once per process)."""
    text = resources.files("gateway.text").joinpath(VOCABULARY_FILE).read_text("utf-8")
    sections = yaml.safe_load(text)
    return frozenset(word.lower() for words in sections.values() for word in words.split())


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def is_clinical_token(token: str) -> bool:
    """A listed word, a function word or a short code (T1, B70f, 5mm, 3D, a single letter)."""
    lower = token.lower()
    return lower in vocabulary() or lower in FUNCTION_WORDS or bool(_CODE.match(token))


def only_clinical(text: str) -> bool:
    """True when every word of ``text`` is clinical vocabulary or a code (or there is none).
    Joined words are judged by their parts too ("Z13.820-Encounter", "T1-weighted")."""
    return all(
        is_clinical_token(t) or all(is_clinical_token(p) for p in _JOINERS.split(t) if p)
        for t in tokens(text)
    )


def model_form(text: str) -> str:
    """Upper-case text in title case (same length, so spans map back); other text as is."""
    if any(c.islower() for c in text) or sum(c.isupper() for c in text) < 2:
        return text
    titled = text.title()
    return titled if len(titled) == len(text) else text


class VocabularyFilter:
    """Wraps an NLP recognizer for descriptors: skipped on clinical-only text, its spans that are
    clinical words only dropped, upper-case text given to it in title case. ``masked``: the
    registry gives it the text with the identifiers found before it masked, so a description
    that differs between patients only by their identifiers is analysed once."""

    masked = True

    def __init__(self, inner: Recognizer) -> None:
        self.inner = inner
        self.name = f"{inner.name}+vocabulary"
        self.entities = inner.entities

    def is_available(self) -> bool:
        return self.inner.is_available()

    def missing_dependency(self) -> str | None:
        return self.inner.missing_dependency()

    def find(self, text: str, context: PhiContext) -> list[Span]:
        if only_clinical(text):
            return []
        spans = self.inner.find(model_form(text), context)
        return [s for s in spans if not only_clinical(text[s.start : s.end])]
