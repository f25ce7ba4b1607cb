"""Free text in FHIR: strings, markdown, Narrative XHTML, base64 text attachments.

Spans come from the linked deny-list (this patient's names, identifiers, address, phone, birth
date), the dependency-free patterns and, when the profile enables NLP, Presidio. UIDs/OIDs inside
the text are never mangled into false IP-address or phone hits: a DICOM UID (``1.2.840.10008.*``)
is kept, any other UID becomes its DICOM UID pseudonym (so it still joins). Each other span
becomes ``[ENTITY-XXXXXX]`` where ``XXXXXX`` is a keyed token of the patient and the normalised
span, so the same name gets the same surrogate within a patient.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import html
import re
from collections import Counter
from typing import Any

from gateway.linkage.pseudonym import Pseudonymizer
from gateway.profiles.fhir_model import FreeTextSettings
from gateway.text.context import PhiContext
from gateway.text.engine import build_text_registry
from gateway.text.recognizers import RecognizerRegistry
from gateway.text.spans import Span, merge_spans

TEXT_CONTENT_TYPES = ("text/plain", "text/html", "application/xhtml+xml", "text/markdown")
_PROTECTED = re.compile(
    r"(?:urn:oid:)?(?<![\d.])\d+(?:\.\d+){4,}(?!\.?\d)"  # UIDs / OIDs (IPs have 4 parts)
)
STANDARD_UID_ROOT = "1.2.840.10008."  # DICOM's own UIDs (SOP classes...): not PHI, kept
UID_ENTITY = "UID"  # replaced by the DICOM UID pseudonym, so a UID in a report still joins
_TAG = re.compile(r"(<[^>]*>)")


def build_registry(settings: FreeTextSettings) -> RecognizerRegistry:
    """The shared free-text engine (:func:`gateway.text.engine.build_text_registry`): deny-list,
    patterns, identifiers of anyone by shape and cue (street addresses, ZIP codes,
    institutions, MRNs, member and card numbers) and, when the profile asks for NLP, Presidio.
    Raises when NLP is asked for and unavailable: the gateway refuses to start."""
    return build_text_registry(settings)


class TextCleaner:
    def __init__(
        self,
        settings: FreeTextSettings,
        pseudonymizer: Pseudonymizer,
        *,
        year_only: bool = False,
        age_cap: int | None = None,
    ) -> None:
        self.settings = settings
        self.year_only = year_only
        self.age_cap = age_cap  # Safe Harbor: ages above it are written "<cap+1>+"
        self.registry = build_registry(settings)
        self.p = pseudonymizer
        # the same note is often both DocumentReference and DiagnosticReport.presentedForm:
        # remember recent results (per patient) so NLP runs once per distinct text
        self._recent: dict[
            tuple[str, str, int, int | None], tuple[str, tuple[tuple[str, int], ...]]
        ] = {}

    def _spans(self, text: str, context: PhiContext) -> list[Span]:
        """PHI spans, with UIDs/OIDs as ``UID`` spans that win over anything overlapping them
        (an IP-address or phone pattern inside a UID is not a hit; the UID itself is)."""
        uids = [
            Span(m.start(), m.end(), UID_ENTITY)
            for m in _PROTECTED.finditer(text)
            if not m.group(0).removeprefix("urn:oid:").startswith(STANDARD_UID_ROOT)
        ]
        protected = [(m.start(), m.end()) for m in _PROTECTED.finditer(text)]
        spans = [
            s
            for s in self.registry.find(text, context)
            if not any(a < s.end and s.start < b for a, b in protected)
        ]
        return merge_spans(uids + spans)

    def clean(
        self,
        text: str,
        context: PhiContext,
        person_key: str,
        counts: Counter[str],
        offset_days: int | None = None,
    ) -> str:
        """Replace PHI spans. With ``offset_days``, dates written ``YYYY-MM-DD`` or
        ``M/D/YYYY`` move by the patient's offset (or keep the year only) instead of being
        replaced by a tag, so they stay in step with the structured dates."""
        if not text or not text.strip():
            return text
        key = (text, person_key, _fingerprint(context), offset_days)
        cached = self._recent.get(key)
        if cached is not None:
            for entity, n in cached[1]:
                counts[entity] += n
            return cached[0]
        local: Counter[str] = Counter()
        out = self._clean(text, context, person_key, local, offset_days)
        if self.age_cap is not None:
            out = _cap_ages(out, self.age_cap, local)
        if len(self._recent) > 512:
            self._recent.clear()
        self._recent[key] = (out, tuple(local.items()))
        counts.update(local)
        return out

    def _clean(
        self,
        text: str,
        context: PhiContext,
        person_key: str,
        counts: Counter[str],
        offset_days: int | None,
    ) -> str:
        spans = self._spans(text, context)
        if not spans:
            return text
        pieces: list[str] = []
        cursor = 0
        for span in spans:
            pieces.append(text[cursor : span.start])
            if span.entity == UID_ENTITY:
                original = text[span.start : span.end]
                prefix = "urn:oid:" if original.startswith("urn:oid:") else ""
                pieces.append(prefix + self.p.uid(original.removeprefix("urn:oid:")))
                counts[span.entity] += 1
                cursor = span.end
                continue
            if span.entity == "DATE_TIME" and offset_days is not None:
                moved = _move_date(text[span.start : span.end], offset_days, self.year_only)
                if moved is not None:
                    pieces.append(moved)
                    counts[span.entity] += 1
                    cursor = span.end
                    continue
            found = " ".join(text[span.start : span.end].split()).upper()
            tag = self.p.token("fhir-surrogate", f"{person_key}|{span.entity}|{found}", 6)
            pieces.append(f"[{span.entity}-{tag}]")
            counts[span.entity] += 1
            cursor = span.end
        pieces.append(text[cursor:])
        return "".join(pieces)

    def clean_xhtml(
        self,
        div: str,
        context: PhiContext,
        person_key: str,
        counts: Counter[str],
        offset_days: int | None = None,
    ) -> str:
        """Clean the text between tags; attribute values (href, src...) are dropped."""
        out: list[str] = []
        for piece in _TAG.split(div):
            if piece.startswith("<"):
                out.append(_strip_attributes(piece))
            elif piece:
                plain = html.unescape(piece)
                cleaned = self.clean(plain, context, person_key, counts, offset_days)
                out.append(piece if cleaned == plain else html.escape(cleaned, quote=False))
        return "".join(out)

    def clean_attachment(
        self,
        attachment: dict[str, Any],
        context: PhiContext,
        person_key: str,
        counts: Counter[str],
        offset_days: int | None = None,
    ) -> dict[str, Any] | None:
        """Text attachments are decoded, cleaned and re-encoded (size kept in step, hash and url
        dropped); other content types lose their data unless the profile keeps the type."""
        out = {k: v for k, v in attachment.items() if k not in ("url", "hash", "_url", "_hash")}
        content_type = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
        if isinstance(out.get("title"), str):
            out["title"] = self.clean(out["title"], context, person_key, counts, offset_days)
        data = attachment.get("data")
        if not isinstance(data, str):
            return out
        if content_type in TEXT_CONTENT_TYPES:
            try:
                raw = base64.b64decode(data, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                out.pop("data", None)
                out.pop("size", None)
                counts["ATTACHMENT_REMOVED"] += 1
                return out
            if content_type == "text/plain" or content_type == "text/markdown":
                cleaned = self.clean(raw, context, person_key, counts, offset_days)
            else:
                cleaned = self.clean_xhtml(raw, context, person_key, counts, offset_days)
            encoded = cleaned.encode("utf-8")
            out["data"] = base64.b64encode(encoded).decode("ascii")
            if "size" in out:
                out["size"] = len(encoded)
            return out
        if content_type in {t.lower() for t in self.settings.keep_attachment_types}:
            return out
        out.pop("data", None)
        out.pop("size", None)
        counts["ATTACHMENT_REMOVED"] += 1
        return out


_AGE = re.compile(
    r"(?<![\d.])(\d{2,3})(?=[- ](?:year|yr)s?[- ]old\b|\s*(?:yo|y/o)\b)", re.IGNORECASE
)


def _cap_ages(text: str, cap: int, counts: Counter[str]) -> str:
    """Safe Harbor (C): ages over ``cap`` in text become ``<cap+1>+`` ("93 year-old" -> "90+")."""

    def repl(match: re.Match[str]) -> str:
        if int(match.group(1)) <= cap:
            return match.group(0)
        counts["AGE"] += 1
        return f"{cap + 1}+"

    return _AGE.sub(repl, text)


_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def _move_date(found: str, offset_days: int, year_only: bool) -> str | None:
    """A date span in the same written form, shifted (or the year only); None if not a date
    we can read without ambiguity (it is then replaced by a tag)."""
    iso = _ISO_DATE.match(found)
    us = _US_DATE.match(found)
    try:
        if iso:
            day = dt.date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
        elif us:
            day = dt.date(int(us.group(3)), int(us.group(1)), int(us.group(2)))
        else:
            return None
        moved = day + dt.timedelta(days=offset_days)
    except (ValueError, OverflowError):
        return None
    if year_only:
        return f"{day.year:04d}"
    if iso:
        return moved.isoformat()
    return f"{moved.month}/{moved.day}/{moved.year:04d}"


def _fingerprint(context: PhiContext) -> int:
    return hash(
        (
            frozenset(context.names),
            frozenset(context.identifiers),
            frozenset(context.dates),
            frozenset(context.other),
        )
    )


_ATTR = re.compile(r"^<\s*(/?)\s*([A-Za-z][A-Za-z0-9]*)([^>]*?)(/?)\s*>$")
_XMLNS = re.compile(r"""\sxmlns\s*=\s*("[^"]*"|'[^']*')""")


def _strip_attributes(tag: str) -> str:
    match = _ATTR.match(tag)
    if not match:
        return ""  # comments, processing instructions, malformed: dropped
    closing, name, attrs, self_closing = match.groups()
    keep = ""
    xmlns = _XMLNS.search(attrs)
    if xmlns and name == "div":
        keep = " xmlns=" + xmlns.group(1)
    return f"<{closing}{name}{keep}{self_closing}>"
