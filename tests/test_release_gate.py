"""The release gate's decisions, case by case: what a value is and where it stands decide whether
its presence in the output is a leak. Positive cases (leaks) and negative ones (coincidences of
words seen in real vendor files) in one table."""

from __future__ import annotations

from dataclasses import dataclass

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.sequence import Sequence

from gateway.dicom.needles import Needle, NeedleSet, ValueKind, looks_like_name, value_kind
from gateway.dicom.rules import RuleSet
from gateway.errors import QuarantineError
from gateway.pipeline.verify import leaks_in, needles_for, verify_release
from gateway.profiles.loader import load_profile
from gateway.text.context import PhiContext

K = ValueKind


@dataclass(frozen=True)
class Case:
    id: str
    needle: Needle
    keyword: str  # output attribute the value is put in
    value: str
    leak: bool
    nested: bool = False  # inside a code item of a sequence


PATIENT_ID, NAME, INSTITUTION = 0x00100020, 0x00100010, 0x00080080
CASES = [
    # recall: identifiers, full names, UIDs, dates count wherever they stand
    Case("mrn-in-manufacturer", Needle("MRN4471932", K.IDENTIFIER, PATIENT_ID), "Manufacturer", "x MRN4471932 x", True),
    Case("mrn-in-model", Needle("MRN4471932", K.IDENTIFIER, PATIENT_ID), "ManufacturerModelName", "MRN4471932", True),
    Case("mrn-in-image-type", Needle("MRN4471932", K.IDENTIFIER, PATIENT_ID), "ImageType", "MRN4471932", True),
    Case("mrn-in-comments", Needle("MRN4471932", K.IDENTIFIER, PATIENT_ID), "ImageComments", "see MRN4471932", True),
    Case("full-name-in-code-meaning", Needle("HOLLOWAY^MARGARETHE", K.PATIENT_NAME, NAME), "CodeMeaning", "HOLLOWAY^MARGARETHE", True, nested=True),
    Case("full-name-in-manufacturer", Needle("HOLLOWAY^MARGARETHE", K.PATIENT_NAME, NAME), "Manufacturer", "by HOLLOWAY^MARGARETHE", True),
    Case("name-part-in-description", Needle("HOLLOWAY", K.NAME_PART, NAME), "StudyDescription", "CT of Holloway", True),
    Case("name-part-in-comments", Needle("HOLLOWAY", K.NAME_PART, NAME), "ImageComments", "Mrs Holloway, left knee", True),
    Case("name-part-in-other-pn", Needle("HOLLOWAY", K.NAME_PART, NAME), "ReferringPhysicianName", "HOLLOWAY^JOHN", True),
    Case("physician-in-text", Needle("KOVALENKO^DMITRI", K.PERSON_NAME, 0x00080090), "TextValue", "signed KOVALENKO^DMITRI", True, nested=True),
    Case("institution-in-comments", Needle("Saint Mercy Memorial Hospital", K.INSTITUTION, INSTITUTION), "ImageComments", "from Saint Mercy Memorial Hospital", True),
    Case("institution-in-free-lo", Needle("Saint Mercy Memorial Hospital", K.INSTITUTION, INSTITUTION), "StudyDescription", "Saint Mercy Memorial Hospital CT", True),
    Case("address-in-comments", Needle("1428 Elmwood Terrace, Springfield", K.ADDRESS, 0x00101040), "ImageComments", "lives 1428 Elmwood Terrace, Springfield", True),
    Case("uid-in-text", Needle("1.2.826.0.1.3680043.10.1234.7", K.UID, 0x00080018), "ImageComments", "copy of 1.2.826.0.1.3680043.10.1234.7", True),
    Case("uid-whole-in-uid", Needle("1.2.826.0.1.3680043.10.1234.7", K.UID, 0x00080018), "ReferencedSOPInstanceUID", "1.2.826.0.1.3680043.10.1234.7", True, nested=True),
    Case("date-kept-in-date-field", Needle("20240917", K.DATE, 0x00080020), "AcquisitionDate", "20240917", True),
    Case("date-in-comments", Needle("20240917", K.DATE, 0x00080020), "ImageComments", "scan of 20240917", True),
    Case("placeholder-copied-to-pn", Needle("Enter text", K.PLACEHOLDER, 0x0040A123), "PerformingPhysicianName", "Enter text", True),
    # precision: coincidences of words in coded and device fields, placeholders in text
    Case("institution-first-word-of-manufacturer", Needle("TOSHIBA", K.INSTITUTION, INSTITUTION), "Manufacturer", "TOSHIBA_MEC", False),
    Case("institution-is-manufacturer", Needle("OFFIS", K.INSTITUTION, INSTITUTION), "Manufacturer", "OFFIS", False),
    Case("placeholder-institution-in-model", Needle("Here", K.INSTITUTION, INSTITUTION), "ManufacturerModelName", "Treatment Planning System name here", False),
    Case("name-part-in-image-type", Needle("Perfusion", K.NAME_PART, NAME), "ImageType", "DERIVED\\PRIMARY\\PERFUSION", False),
    Case("name-part-in-code-meaning", Needle("PATIENT", K.NAME_PART, NAME), "CodeMeaning", "Retain Patient Characteristics Option", False, nested=True),
    Case("name-part-of-phantom-in-manufacturer", Needle("SIEMENS", K.NAME_PART, NAME), "Manufacturer", "SIEMENS", False),
    Case("placeholder-person-in-sr-text", Needle("Enter text", K.PLACEHOLDER, 0x0040A123), "TextValue", "Enter text", False, nested=True),
    Case("placeholder-token-in-pn", Needle("Enter text", K.PLACEHOLDER, 0x0040A123), "PerformingPhysicianName", "Enter text here", False),
    Case("uid-prefix-of-another-uid", Needle("1.2.826.0.1.3680043.10.1234.7", K.UID, 0x00080018), "ReferencedSOPInstanceUID", "1.2.826.0.1.3680043.10.1234.7.5", False, nested=True),
    Case("date-in-software-version", Needle("20240917", K.DATE, 0x00080020), "SoftwareVersions", "build 20240917", False),
    Case("punctuation-only", Needle("----", K.PLACEHOLDER, 0x00081070), "OperatorsName", "----", False),
]


def output_dataset(case: Case) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = "2.25.1"
    target = ds
    if case.nested:
        item = Dataset()
        ds.ContentSequence = Sequence([item])
        target = item
    setattr(target, case.keyword, case.value.split("\\") if "\\" in case.value else case.value)
    return ds


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet(load_profile("research"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gate_decision(case: Case, rules: RuleSet) -> None:
    leaks = leaks_in(output_dataset(case), NeedleSet(frozenset({case.needle})), rules)
    assert bool(leaks) is case.leak, [leak.describe() for leak in leaks]


def test_a_shifted_date_equal_to_another_original_date_is_no_leak(rules: RuleSet) -> None:
    """ContentDate shifted by the patient's offset can land on the original StudyDate."""
    ds = Dataset()
    ds.ContentDate = "20110617"
    needles = {Needle("20110617", K.DATE, 0x00080020), Needle("20110603", K.DATE, 0x00080023)}
    produced = frozenset({(0x00080023, "20110617"), (0x00080020, "20110701")})
    assert not leaks_in(ds, NeedleSet(frozenset(needles), produced), rules)
    assert leaks_in(ds, NeedleSet(frozenset(needles)), rules)  # not written by the shift: leak


def test_reason_names_kind_source_and_place_never_the_value(rules: RuleSet) -> None:
    ds = Dataset()
    ds.Manufacturer = "x MRN4471932 x"
    with pytest.raises(QuarantineError) as caught:
        verify_release(ds, NeedleSet(frozenset({Needle("MRN4471932", K.IDENTIFIER, PATIENT_ID)})), rules)
    detail = caught.value.detail
    assert "MRN4471932" not in detail
    assert "identifier from (0010,0020) at (0008,0070)" in detail
    assert "device field" in detail and "token in text" in detail


def test_patient_context_identifiers_take_the_source_of_the_replaced_value(
    rules: RuleSet,
) -> None:
    phi = PhiContext()
    phi.add_identifier("MRN4471932")
    phi.add_identifier("OTHER-77731")
    needles = needles_for(NeedleSet(frozenset({Needle("MRN4471932", K.IDENTIFIER, PATIENT_ID)})), phi)
    assert {n.text.upper() for n in needles} == {"MRN4471932", "OTHER-77731"}
    ds = Dataset()
    ds.Manufacturer = "MRN4471932"
    ds.SoftwareVersions = "OTHER-77731"
    reasons = [leak.describe() for leak in leaks_in(ds, needles, rules)]
    assert reasons == [
        "identifier from (0010,0020) at (0008,0070) (device field, token in text)",
        "identifier from the patient's identifiers at (0018,1020) (device field, token in text)",
    ]


def test_needle_inside_a_sequence_kept_as_read_is_located(rules: RuleSet) -> None:
    """Sequences nothing changed are scanned as raw bytes: a hit is looked at again decoded,
    so the decision (and the reason) is about the element inside, and the raw bytes stay."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    code, other = Dataset(), Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113108", "DCM"
    code.CodeMeaning = "Retain Patient Characteristics Option"
    other.ImageComments = "MRN4471932"
    ds.ProcedureCodeSequence = Sequence([code])
    ds.ReferencedImageSequence = Sequence([other])
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    read = pydicom.dcmread(DicomBytesIO(buffer.getvalue()))
    raw_before = read.get_item("ProcedureCodeSequence")
    needles = NeedleSet(frozenset({Needle("PATIENT", K.NAME_PART, NAME), Needle("MRN4471932", K.IDENTIFIER, PATIENT_ID)}))
    leaks = leaks_in(read, needles, rules)
    assert [leak.place for leak in leaks] == ["(0008,1140)[0](0020,4000)"]
    assert read.get_item("ProcedureCodeSequence") is raw_before  # still raw, written as read


@pytest.mark.parametrize(
    ("text", "name"),
    [("Smith^John", True), ("SMITH", True), ("van der Berg^Anna", True), ("O'Neil^Mary", True),
     ("Last Name^First Name", True), ("Enter text", False), ("operator", False), ("----", False),
     ("Dr. Smith", True), ("jsmith", True), ("OPERATOR", False), ("name here", False)],
)
def test_what_looks_like_a_name(text: str, name: bool) -> None:
    assert looks_like_name(text) is name
    kind = value_kind(0x00081070, "PN", text)  # OperatorsName
    assert kind is (K.PERSON_NAME if name else K.PLACEHOLDER)
    assert value_kind(0x00100010, "PN", text) is K.PATIENT_NAME  # the patient's: always a name
