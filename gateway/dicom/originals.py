"""The patient and study modules of an instance as it arrived, noted for the broker vault.

A result returned by a research partner references pseudonyms only; to land on the right
patient in the clinic's viewer it needs the original patient module and study attributes,
which the vault keeps (encrypted) beside the pseudonyms of the PatientID and the
StudyInstanceUID. Read before the header is changed, noted after (when the pseudonyms exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from gateway.dicom.values import dictionary_vr, read_values
from gateway.linkage.issued import IssuedKind, note

PATIENT_MODULE = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
)
STUDY_MODULE = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


@dataclass(frozen=True)
class Originals:
    patient: tuple[tuple[str, str], ...]
    study: tuple[tuple[str, str], ...]


@lru_cache(maxsize=64)
def _tag_and_vr(keyword: str) -> tuple[int, str]:
    tag = int(tag_for_keyword(keyword) or 0)
    return tag, dictionary_vr(tag)


def _read(ds: Dataset, keywords: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The values as they arrived, read from the raw bytes where that is exact (no conversion:
    the elements stay raw for the writer), multiple values joined by a backslash."""
    out = []
    for keyword in keywords:
        tag, vr = _tag_and_vr(keyword)
        try:
            values = read_values(ds, tag, vr)
        except (ValueError, TypeError, UnicodeError):  # undecodable: not kept
            continue
        if values:
            out.append((keyword, "\\".join(values)))
    return tuple(out)


def read_originals(ds: Dataset) -> Originals:
    return Originals(_read(ds, PATIENT_MODULE), _read(ds, STUDY_MODULE))


def note_originals(before: Originals, after: Dataset, patient_pseudonym: str) -> None:
    """Note the patient (by its PatientID pseudonym) and the study (by its UID pseudonym)
    with their modules as they arrived."""
    patient = dict(before.patient)
    if "PatientID" in patient:
        note(IssuedKind.PATIENT, patient_pseudonym, patient["PatientID"], before.patient)
    study = dict(before.study)
    new_study = after.get("StudyInstanceUID")
    if "StudyInstanceUID" in study and new_study:
        context = (*before.study, ("PatientPseudonym", patient_pseudonym))
        note(IssuedKind.UID, str(new_study), study["StudyInstanceUID"], context)
