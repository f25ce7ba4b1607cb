"""PHI-laden DICOM built from real sample images (pydicom's own test files).

Every value that identifies the patient is listed in ``PHI`` so tests can grep for it in the
output, raw bytes included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ORG_ROOT = "1.2.826.0.1.3680043.10.1234."  # test root for original (pre-de-id) UIDs


@dataclass(frozen=True)
class Patient:
    family: str = "HOLLOWAY"
    given: str = "MARGARETHE"
    patient_id: str = "MRN4471932"
    issuer: str = "STMERCY"
    birth_date: str = "19470312"
    address: str = "1428 Elmwood Terrace, Springfield"
    phone: str = "555-867-5309"
    accession: str = "ACC20240917"
    institution: str = "Saint Mercy Memorial Hospital"
    physician: str = "KOVALENKO^DMITRI"
    study_date: str = "20240917"

    @property
    def name(self) -> str:
        return f"{self.family}^{self.given}"

    def phi_strings(self) -> list[str]:
        """Strings that must not appear anywhere in the output (raw bytes included)."""
        return [
            self.family,
            self.given,
            self.patient_id,
            self.birth_date,
            "Elmwood Terrace",
            self.phone,
            self.accession,
            self.institution,
            "KOVALENKO",
            "DMITRI",
            self.study_date,
        ]


def _uid(tag: str) -> str:
    return generate_uid(prefix=ORG_ROOT, entropy_srcs=[tag])


def phi_instance(
    source: str,
    patient: Patient,
    study_key: str,
    series_key: str,
    instance_number: int,
    referenced: Dataset | None = None,
) -> Dataset:
    """A real image with a PHI-laden header: nested, private and UN elements included."""
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = patient.phone
    ds.PatientSex = "F"
    ds.PatientAge = "077Y"
    ds.AccessionNumber = patient.accession
    ds.InstitutionName = patient.institution
    ds.ReferringPhysicianName = patient.physician
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = patient.study_date
    ds.StudyTime = "101500"
    ds.StudyDescription = f"CT chest for {patient.given.title()} {patient.family.title()} call {patient.phone}"
    ds.SeriesDescription = "AXIAL 5mm"
    ds.StudyInstanceUID = _uid(study_key)
    ds.SeriesInstanceUID = _uid(study_key + series_key)
    ds.SOPInstanceUID = _uid(f"{study_key}{series_key}{instance_number}")
    ds.FrameOfReferenceUID = _uid(study_key + "for")
    ds.InstanceNumber = instance_number
    other = Dataset()
    other.PatientID = "NAT-99812377"
    other.IssuerOfPatientID = "NATIONAL"
    ds.OtherPatientIDsSequence = Sequence([other])
    request = Dataset()
    request.RequestedProcedureID = "RP-" + patient.accession
    request.ScheduledProcedureStepID = "SPS-" + patient.patient_id
    request.RequestingPhysician = patient.physician
    ds.RequestAttributesSequence = Sequence([request])
    if referenced is not None:
        ref = Dataset()
        ref.ReferencedSOPClassUID = referenced.SOPClassUID
        ref.ReferencedSOPInstanceUID = referenced.SOPInstanceUID
        ds.ReferencedImageSequence = Sequence([ref])
    block = ds.private_block(0x0029, "ACME PATIENT INFO", create=True)
    block.add_new(0x01, "LO", patient.name.replace("^", " "))
    block.add_new(0x02, "LO", patient.patient_id)
    inner = Dataset()
    inner_block = inner.private_block(0x0031, "ACME NESTED", create=True)
    inner_block.add_new(0x01, "LO", patient.address)
    block.add_new(0x03, "SQ", Sequence([inner]))
    ds.add_new(0x00311050, "UN", patient.family.encode("ascii"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    ds.file_meta = meta
    return ds


def write_study(
    folder: Path,
    patient: Patient,
    study_key: str = "study-1",
    sources: tuple[str, ...] = ("CT_small.dcm", "CT_small.dcm", "MR_small.dcm"),
) -> list[Path]:
    """Write a small study (one series per source kind); file names are PHI on purpose."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    previous: Dataset | None = None
    for number, source in enumerate(sources, start=1):
        ds = phi_instance(source, patient, study_key, source.split("_")[0], number, previous)
        path = folder / f"{patient.family}_{patient.patient_id}_{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        previous = ds
    return paths


def all_text(ds: Dataset) -> str:
    """Every element value of a dataset, recursive, file meta and raw bytes included."""
    parts: list[str] = []

    def walk(d: Dataset) -> None:
        for elem in d:
            if elem.tag == 0x7FE00010:
                continue
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif isinstance(elem.value, bytes):
                parts.append(elem.value.decode("latin-1"))
            else:
                parts.append(str(elem.value))

    walk(ds)
    if getattr(ds, "file_meta", None) is not None:
        walk(ds.file_meta)
    return "\n".join(parts)


def sr_with_phi(patient: Patient) -> Dataset:
    """A Basic Text SR whose content tree names the patient and carries dates and UIDs."""
    ds = pydicom.dcmread(get_testdata_file("reportsi.dcm"))
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.StudyDate = ds.ContentDate = patient.study_date
    ds.AccessionNumber = patient.accession
    ds.StudyInstanceUID = _uid("sr-study")
    ds.SeriesInstanceUID = _uid("sr-series")
    ds.SOPInstanceUID = _uid("sr-instance")
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    concept = Dataset()
    concept.CodeValue = "121071"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Finding"
    text.ConceptNameCodeSequence = Sequence([concept])
    text.TextValue = (
        f"Patient {patient.given.title()} {patient.family.title()} (MRN {patient.patient_id}) "
        "has a 4 mm nodule in the right upper lobe, unchanged."
    )
    date_item = Dataset()
    date_item.RelationshipType = "CONTAINS"
    date_item.ValueType = "DATE"
    date_item.ConceptNameCodeSequence = Sequence([concept])
    date_item.Date = patient.study_date
    ds.ContentSequence = Sequence([text, date_item])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
