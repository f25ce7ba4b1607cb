"""PHI-laden copies of every pydicom test file, filled the way real scanners fill them.

Scanners copy the worklist into the image: Request Attributes Sequence (requested procedure,
scheduled step, nested Referenced Study and code sequences), Referenced Study and Referenced
Performed Procedure Step sequences, Other Patient IDs, operators and the institution. The
conformance test (tests/test_iod_conformance.py) de-identifies these copies and compares
dciodvfy's findings before and after; ``python -m tests.iod_fixtures DIR`` writes the corpus for
``deid-gateway deidentify --validate``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests.dicom_fixtures import ORG_ROOT, Patient

TEST_FILES = Path(os.path.dirname(str(get_testdata_file("CT_small.dcm"))))
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # what scanners put in Referenced Study
MODALITY_PPS = "1.2.840.10008.3.1.2.3.3"
PHI_SUFFIX = "_phi.dcm"


def _uid(key: str) -> str:
    return generate_uid(prefix=ORG_ROOT, entropy_srcs=[key])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _reference(sop_class: str, key: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = _uid(key)
    return item


def _request(patient: Patient, study_uid: str) -> Dataset:
    """One Request Attributes item as a modality copies it from the worklist."""
    item = Dataset()
    item.AccessionNumber = patient.accession
    item.StudyInstanceUID = study_uid
    item.RequestedProcedureID = "RP-" + patient.accession
    item.RequestedProcedureDescription = f"CT CHEST {patient.family}"
    item.RequestedProcedureCodeSequence = Sequence([_code("CTCHEST", "99LOCAL", "CT Chest")])
    item.ScheduledProcedureStepID = "SPS-" + patient.patient_id
    item.ScheduledProcedureStepDescription = f"Chest for {patient.family}"
    item.ScheduledProtocolCodeSequence = Sequence([_code("P-101", "99LOCAL", "Chest routine")])
    item.ReferencedStudySequence = Sequence([_reference(DETACHED_STUDY_MANAGEMENT, "req-study")])
    return item


def add_scanner_phi(ds: Dataset, patient: Patient) -> None:
    """Fill ``ds`` (any IOD) with the identifying attributes a modality writes."""
    study_uid = str(ds.get("StudyInstanceUID") or _uid("study"))
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = patient.phone
    other = Dataset()
    other.PatientID = "NAT-99812377"
    other.IssuerOfPatientID = "NATIONAL"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.AccessionNumber = patient.accession
    ds.ReferringPhysicianName = patient.physician
    ds.InstitutionName = patient.institution
    ds.InstitutionAddress = patient.address
    ds.StationName = "CTSTATION7"
    ds.OperatorsName = "TECH^ANNA"
    ds.PerformingPhysicianName = patient.physician
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = patient.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.StudyID = "S" + patient.accession[-5:]
    ds.ReferencedStudySequence = Sequence([_reference(DETACHED_STUDY_MANAGEMENT, "study-ref")])
    ds.ReferencedPerformedProcedureStepSequence = Sequence([_reference(MODALITY_PPS, "mpps")])
    ds.PerformedProcedureStepID = "PPS-" + patient.patient_id
    ds.PerformedProcedureStepStartDate = patient.study_date
    ds.PerformedProcedureStepStartTime = "101400"
    ds.PerformedProcedureStepDescription = f"Chest for {patient.family}"
    ds.RequestAttributesSequence = Sequence([_request(patient, study_uid)])


def phi_copy(path: Path, patient: Patient) -> Dataset | None:
    """A PHI-laden copy of one test file, or None when it is not a readable composite instance."""
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, AttributeError, EOFError):
        return None
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds or not hasattr(ds, "file_meta"):
        return None
    add_scanner_phi(ds, patient)
    return ds


def write_corpus(folder: Path, patient: Patient | None = None) -> list[Path]:
    """Every pydicom test file that pydicom reads as an instance, as a PHI-laden copy."""
    patient = patient or Patient()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(TEST_FILES.iterdir()):
        ds = phi_copy(source, patient)
        if ds is None:
            continue
        target = folder / (source.stem + PHI_SUFFIX)
        try:
            ds.save_as(target, enforce_file_format=False)
        except (OSError, ValueError, TypeError, AttributeError, OverflowError):  # unwritable
            target.unlink(missing_ok=True)
            continue
        written.append(target)
    return written


if __name__ == "__main__":
    paths = write_corpus(Path(sys.argv[1]))
    print(f"wrote {len(paths)} PHI-laden copies to {sys.argv[1]}")
