"""What identifies the patient of an instance: read from the header before anything changes.

The result feeds the text scrubber (linked deny-list for descriptors, SR text, burned-in text)
and the patient's identity for the linkage core.
"""

from __future__ import annotations

import datetime as dt

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from gateway.dicom import tags as T
from gateway.dicom.values import element_vr, read_values
from gateway.text.context import PhiContext

NAME_KEYWORDS = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "ResponsiblePerson",
    "PersonName",
    "ScheduledPerformingPhysicianName",
)
IDENTIFIER_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "MedicalRecordLocator",
    "AdmissionID",
    "RequestedProcedureID",
    "PerformedProcedureStepID",
    "ScheduledProcedureStepID",
    "StudyID",
    "IssuerOfPatientID",
    "PatientInsurancePlanCodeSequence",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
)
DATE_KEYWORDS = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
ADDRESS_KEYWORDS = ("PatientAddress", "InstitutionAddress", "ReferringPhysicianAddress")
OTHER_KEYWORDS = (
    "PatientTelephoneNumbers",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "ReferringPhysicianTelephoneNumbers",
    "RegionOfResidence",
    "StationName",
    "DeviceSerialNumber",
)


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, MultiValue)):
        return [str(v) for v in value if v not in (None, "")]
    text = str(value)
    return [text] if text else []


def _tags(keywords: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(int(t) for t in (tag_for_keyword(k) for k in keywords) if t is not None)


NAME_TAGS = _tags(NAME_KEYWORDS)
IDENTIFIER_TAGS = _tags(IDENTIFIER_KEYWORDS)
DATE_TAGS = _tags(DATE_KEYWORDS)
OTHER_TAGS = _tags(OTHER_KEYWORDS)
ADDRESS_TAGS = _tags(ADDRESS_KEYWORDS)
OTHER_PATIENT_IDS_SEQUENCE = 0x00101002


def _present(ds: Dataset, tags: tuple[int, ...], held: frozenset[int]) -> list[object]:
    """Values of the tags present, read without converting the elements where exact.
    ``held``: the dataset's tags as plain ints (one set test per tag, no dataset lookups)."""
    out: list[object] = []
    for tag in tags:
        if tag in held:
            vr = element_vr(ds, tag)
            out.append(read_values(ds, tag, vr) if vr != "SQ" else ds[tag].value)
    return out


def phi_context(ds: Dataset) -> PhiContext:
    """Deny-list terms from the top-level header (and OtherPatientIDsSequence)."""
    context = PhiContext()
    held = frozenset(map(int, ds.keys()))
    for element_value in _present(ds, NAME_TAGS, held):
        for value in _values(element_value):
            context.add_name(value)
    for element_value in _present(ds, IDENTIFIER_TAGS, held):
        if isinstance(element_value, (list, MultiValue, str)):
            for value in _values(element_value):
                context.add_identifier(value)
    if OTHER_PATIENT_IDS_SEQUENCE in held:
        for item in ds[OTHER_PATIENT_IDS_SEQUENCE].value or []:
            for value in _values(item.get("PatientID")):
                context.add_identifier(value)
    for element_value in _present(ds, DATE_TAGS, held):
        for value in _values(element_value):
            parsed = parse_da(value)
            if parsed:
                context.add_date(parsed)
    for element_value in _present(ds, OTHER_TAGS, held):
        for value in _values(element_value):
            context.add_other(value)
    for element_value in _present(ds, ADDRESS_TAGS, held):  # and each part: street, city, ZIP
        for value in _values(element_value):
            context.add_address(value)
    return context


def parse_da(value: str) -> dt.date | None:
    text = value.strip()[:8]
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        return None


def patient_identity(ds: Dataset) -> tuple[str, str | None, str]:
    """(identifier, issuer, kind). Without a PatientID the study stands in for the patient, so
    that the instances of one study still share one pseudonym and one date offset."""
    patient_id = _first(ds, T.PATIENT_ID, "LO")
    if patient_id:
        return patient_id, _first(ds, T.ISSUER_OF_PATIENT_ID, "LO") or None, "patient"
    study = _first(ds, T.STUDY_INSTANCE_UID, "UI")
    if study:
        return study, "dicom-study", "study"
    return _first(ds, T.SOP_INSTANCE_UID, "UI") or "unknown", "dicom-instance", "instance"


def _first(ds: Dataset, tag: int, vr: str) -> str:
    """The element's value as one stripped string ("" when absent), read without converting."""
    return "\\".join(read_values(ds, tag, vr))
