"""What identifies the patient of an instance: read from the header before anything changes.

The result feeds the text scrubber (linked deny-list for descriptors, SR text, burned-in text)
and the patient's identity for the linkage core.
"""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

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
OTHER_KEYWORDS = (
    "PatientAddress",
    "PatientTelephoneNumbers",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianAddress",
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


def phi_context(ds: Dataset) -> PhiContext:
    """Deny-list terms from the top-level header (and OtherPatientIDsSequence)."""
    context = PhiContext()
    for keyword in NAME_KEYWORDS:
        for value in _values(ds.get(keyword)):
            context.add_name(value)
    for keyword in IDENTIFIER_KEYWORDS:
        element_value = ds.get(keyword)
        if isinstance(element_value, (list, MultiValue)) or isinstance(element_value, str):
            for value in _values(element_value):
                context.add_identifier(value)
    for item in ds.get("OtherPatientIDsSequence", []) or []:
        for value in _values(item.get("PatientID")):
            context.add_identifier(value)
    for keyword in DATE_KEYWORDS:
        for value in _values(ds.get(keyword)):
            parsed = parse_da(value)
            if parsed:
                context.add_date(parsed)
    for keyword in OTHER_KEYWORDS:
        for value in _values(ds.get(keyword)):
            context.add_other(value)
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
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id:
        issuer = str(ds.get("IssuerOfPatientID", "") or "").strip() or None
        return patient_id, issuer, "patient"
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    if study:
        return study, "dicom-study", "study"
    return str(ds.get("SOPInstanceUID", "") or "unknown").strip(), "dicom-instance", "instance"
