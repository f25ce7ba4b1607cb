"""Properties of the FHIR pseudonyms and text cleaning, over generated inputs (hypothesis)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.fhir.freetext import TextCleaner
from gateway.fhir.references import IdMapper, ReferenceMode
from gateway.fhir.resolver import InMemoryPatientIndex
from gateway.linkage.context import Linkage
from gateway.linkage.dates import shift_fhir_date
from gateway.linkage.keys import PseudonymKey
from gateway.profiles.fhir_model import FreeTextSettings
from gateway.text.context import PhiContext
from tests.conftest import TEST_KEY
from tests.fhir_fixtures import profile_with

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
LOGICAL_IDS = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)
TYPES = st.sampled_from(["Observation", "Encounter", "Organization", "Practitioner"])
NAMES = st.from_regex(r"[A-Z][a-z]{3,10}[0-9]{0,3}", fullmatch=True)
FILLER = st.text(alphabet=st.sampled_from(list("abc xyz.,;:-\n")), max_size=30)


@pytest.fixture(scope="module")
def mapper() -> IdMapper:
    """Built from an explicit key: no environment or key file involved."""
    profile = profile_with("research", free_text={"nlp": False})
    linkage = Linkage(profile, PseudonymKey("default", TEST_KEY.encode()))
    return IdMapper(
        linkage, InMemoryPatientIndex(linkage.identity), research_base_url="https://r/fhir"
    )


@settings(max_examples=200)
@given(rtype=TYPES, a=LOGICAL_IDS, b=LOGICAL_IDS)
def test_resource_ids_are_valid_deterministic_and_distinct(
    mapper: IdMapper, rtype: str, a: str, b: str
) -> None:
    m = mapper
    first = m.resource_id(rtype, a)
    assert FHIR_ID.match(first) and first == m.resource_id(rtype, a)
    assert m.reference(f"{rtype}/{a}", ReferenceMode.FLAT) == f"{rtype}/{first}"
    if a != b:
        assert first != m.resource_id(rtype, b)


@settings(max_examples=200)
@given(original=st.uuids())
def test_urn_uuid_stays_a_uuid(mapper: IdMapper, original: uuid.UUID) -> None:
    url = f"urn:uuid:{original}"
    mapped = mapper.full_url(url, None, None)
    assert mapped.startswith("urn:uuid:") and mapped != url
    assert str(uuid.UUID(mapped[9:])) == mapped[9:]
    assert mapper.reference(url, ReferenceMode.BUNDLE) == mapped


@settings(max_examples=300)
@given(
    day=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2090, 12, 31)),
    offset=st.integers(min_value=-365, max_value=365),
    precision=st.sampled_from(["date", "month", "year", "dateTime"]),
)
def test_date_shift_keeps_precision_and_inverts(day: dt.date, offset: int, precision: str) -> None:
    text = {
        "date": day.isoformat(),
        "month": day.isoformat()[:7],
        "year": day.isoformat()[:4],
        "dateTime": day.isoformat() + "T10:11:12+02:00",
    }[precision]
    shifted = shift_fhir_date(text, offset)
    assert shifted is not None and len(shifted) == len(text)
    if precision in ("date", "dateTime"):
        assert shift_fhir_date(shifted, -offset) == text


@settings(max_examples=100, deadline=None)
@given(given_name=NAMES, family=NAMES, before=FILLER, after=FILLER)
def test_patient_names_never_survive_cleaning(
    mapper: IdMapper, given_name: str, family: str, before: str, after: str
) -> None:
    m = mapper
    cleaner = TextCleaner(FreeTextSettings(nlp=False), m.p)
    context = PhiContext()
    context.add_name(f"{given_name} {family}")
    text = f"{before} {given_name} {family} {after} / {family.upper()}, {given_name}."
    out = cleaner.clean(text, context, "k", Counter())
    for name in (given_name, family):
        assert not re.search(
            rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", out, re.IGNORECASE
        )
