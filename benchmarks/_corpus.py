"""A deterministic, PHI-laden DICOM corpus built from pydicom's own test files.

Every generated file is a copy of one of pydicom's test files (``pydicom.data``) with a new
identity: PatientID/PatientName/IssuerOfPatientID, StudyInstanceUID, SeriesInstanceUID,
SOPInstanceUID (file meta follows), FrameOfReferenceUID, AccessionNumber, dates and times, plus
identifying text in descriptors (StudyDescription, SeriesDescription, ImageComments, ...), in a
nested sequence and in a private block. Files are grouped into patients -> studies -> series, so
the corpus holds several patients and studies and linkage has something to link.

The corpus is header-heavy: pixel data is copied byte for byte (never decoded), and the
templates are small single- and multi-frame files in uncompressed, RLE and JPEG 2000 transfer
syntaxes. Only templates that the ``basic`` profile processes (not quarantines) are used; check
with ``deid-gateway deidentify --input CORPUS --output OUT --profile basic``.

Same ``seed`` + same ``count`` -> the same bytes in every run.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID

PRIVATE_CREATOR = "BENCHMARK_PHI_01"


@dataclass(frozen=True)
class Template:
    """One pydicom test file, how often it is drawn, and what it stands for."""

    name: str
    weight: int
    kind: str


# Weights: mostly small CT/MR images (the common case), some multi-frame enhanced MR, RT and
# compressed files. Every one is processed by the ``basic`` profile once its identity is replaced.
TEMPLATES: tuple[Template, ...] = (
    Template("CT_small.dcm", 24, "CT, explicit LE, GE private block"),
    Template("MR_small.dcm", 18, "MR, explicit LE"),
    Template("MR_small_implicit.dcm", 6, "MR, implicit LE"),
    Template("MR_small_RLE.dcm", 8, "MR, RLE Lossless"),
    Template("MR_small_jp2klossless.dcm", 6, "MR, JPEG 2000 lossless"),
    Template("emri_small.dcm", 10, "Enhanced MR, 10 frames, functional groups"),
    Template("emri_small_RLE.dcm", 5, "Enhanced MR, 10 frames, RLE"),
    Template("rtdose.dcm", 6, "RT Dose, 15 frames, implicit LE"),
    Template("rtplan.dcm", 7, "RT Plan, nested sequences, no pixels"),
    Template("SC_rgb_rle_2frame.dcm", 5, "Secondary Capture RGB, 2 frames, RLE"),
    Template("liver_1frame.dcm", 5, "Segmentation, explicit LE"),
)

SURNAMES = (
    "Abernathy",
    "Bergstrom",
    "Castellano",
    "Drummond",
    "Eriksson",
    "Fairweather",
    "Gallagher",
    "Halvorsen",
    "Ingleby",
    "Jablonski",
    "Kowalczyk",
    "Lindqvist",
    "Montgomery",
    "Nakamura",
    "Oyelaran",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Szczepanski",
    "Thistlewood",
)
GIVEN = (
    "Adelaide",
    "Bartholomew",
    "Cordelia",
    "Desmond",
    "Evangeline",
    "Fitzgerald",
    "Gwendolyn",
    "Horatio",
    "Isadora",
    "Jebediah",
    "Katarina",
    "Leopold",
    "Marguerite",
    "Nathaniel",
)
STREETS = ("Juniper Crescent", "Tamarack Lane", "Wexford Road", "Bramble Way", "Osprey Drive")
CITIES = ("Millbrook", "Ashford Falls", "Port Calloway", "Eastwick")
HOSPITALS = ("Saint Brigid General Hospital", "Calloway Valley Medical Center", "Northgate Clinic")
PHYSICIANS = ("Okonkwo^Chidubem^^Dr", "Vasquez^Rosalind^^Dr", "Whitfield^Ambrose^^Dr")
STUDY_KINDS = ("CHEST", "ABDOMEN PELVIS", "HEAD", "KNEE LEFT", "SPINE LUMBAR", "PROSTATE")


@dataclass(frozen=True)
class Patient:
    index: int
    patient_id: str
    name: str
    birth_date: str
    address: str
    phone: str


@dataclass(frozen=True)
class Study:
    patient: Patient
    index: int
    uid: str
    accession: str
    date: str
    time: str
    kind: str
    hospital: str
    physician: str


@dataclass(frozen=True)
class CorpusSummary:
    root: Path
    files: list[Path]
    patients: int
    studies: int
    series: int
    bytes: int
    templates: dict[str, int]


def _uid(seed: int, *parts: object) -> str:
    """A deterministic 2.25 UID: 128 bits of SHA-256 over the seed and the parts."""
    digest = hashlib.sha256(
        "/".join(["benchmark-corpus", str(seed), *map(str, parts)]).encode()
    ).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _date(rng: random.Random, first_year: int, last_year: int) -> str:
    return (
        f"{rng.randint(first_year, last_year):04d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    )


def _patient(rng: random.Random, index: int) -> Patient:
    surname, given = rng.choice(SURNAMES), rng.choice(GIVEN)
    return Patient(
        index=index,
        patient_id=f"MRN{rng.randint(10**6, 10**7 - 1)}{index:03d}",
        name=f"{surname}^{given}",
        birth_date=_date(rng, 1935, 2005),
        address=f"{rng.randint(10, 990)} {rng.choice(STREETS)}, {rng.choice(CITIES)}",
        phone=f"555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
    )


def _study(rng: random.Random, seed: int, patient: Patient, index: int) -> Study:
    return Study(
        patient=patient,
        index=index,
        uid=_uid(seed, "study", patient.index, index),
        accession=f"ACC{rng.randint(10**7, 10**8 - 1)}",
        date=_date(rng, 2012, 2024),
        time=f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}",
        kind=rng.choice(STUDY_KINDS),
        hospital=rng.choice(HOSPITALS),
        physician=rng.choice(PHYSICIANS),
    )


def _personalise(
    ds: Dataset,
    study: Study,
    series_uid: str,
    frame_uid: str,
    sop_uid: str,
    series_number: int,
    instance_number: int,
) -> None:
    """Give one copy its identity and some PHI in places a de-identifier must find."""
    patient = study.patient
    surname, given = patient.name.split("^")
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "HOSP-A"
    ds.PatientBirthDate = patient.birth_date
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = patient.phone
    ds.OtherPatientIDs = f"NHS{patient.patient_id[3:]}"
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    if "FrameOfReferenceUID" in ds or "PixelData" in ds:
        ds.FrameOfReferenceUID = frame_uid
    ds.AccessionNumber = study.accession
    ds.StudyID = f"S{study.accession[3:]}"
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        setattr(ds, keyword, study.date)
    for keyword in ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime"):
        setattr(ds, keyword, study.time)
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.InstitutionName = study.hospital
    for item in _nested_items(ds):  # e.g. rtplan's beams carry their own InstitutionName "Here"
        if "InstitutionName" in item:
            item.InstitutionName = study.hospital
    ds.InstitutionAddress = f"1 Hospital Plaza, {CITIES[study.index % len(CITIES)]}"
    ds.ReferringPhysicianName = study.physician
    ds.OperatorsName = "Tech^Marisol"
    ds.StationName = f"WS{series_number:02d}-{study.hospital.split()[0].upper()}"
    ds.StudyDescription = f"{study.kind} for {given} {surname} MRN {patient.patient_id}"
    ds.SeriesDescription = f"{study.kind} series {series_number} acquired {study.date}"
    ds.ImageComments = f"Pt {surname}, {given} DOB {patient.birth_date} tel {patient.phone}"
    ds.AdditionalPatientHistory = f"Referred by {study.physician.split('^')[0]} at {study.hospital}"
    request = Dataset()
    request.AccessionNumber = study.accession
    request.RequestedProcedureID = f"RP{study.accession[3:]}"
    request.RequestedProcedureDescription = f"{study.kind} {surname}"
    request.ScheduledProcedureStepID = f"SPS{study.accession[3:]}"
    ds.RequestAttributesSequence = [request]
    block = ds.private_block(0x0029, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", patient.name.replace("^", " "))
    block.add_new(0x02, "LO", patient.patient_id)


def _nested_items(ds: Dataset) -> list[Dataset]:
    items: list[Dataset] = []
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                items.append(item)
                items.extend(_nested_items(item))
    return items


def _load_templates() -> dict[str, bytes]:
    raw: dict[str, bytes] = {}
    for template in TEMPLATES:
        path = get_testdata_file(template.name)
        if path is None:
            raise FileNotFoundError(f"pydicom test file not available: {template.name}")
        raw[template.name] = Path(path).read_bytes()
    return raw


def build_corpus(root: Path, count: int = 800, seed: int = 2) -> CorpusSummary:
    """Write ``count`` files under ``root`` (flat, ``000000.dcm``...), grouped into
    patients -> studies (1-3) -> series (2-4) -> instances (3-12)."""
    rng = random.Random(seed)
    raw = _load_templates()
    names = [t.name for t in TEMPLATES]
    weights = [t.weight for t in TEMPLATES]
    root.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    used: dict[str, int] = {}
    patients = studies = series_total = size = 0
    while len(files) < count:
        patient = _patient(rng, patients)
        patients += 1
        for study_index in range(rng.randint(1, 3)):
            study = _study(rng, seed, patient, study_index)
            studies += 1
            for series_number in range(1, rng.randint(2, 4) + 1):
                template = rng.choices(names, weights)[0]
                series_uid = _uid(seed, "series", patient.index, study_index, series_number)
                frame_uid = _uid(seed, "frame", patient.index, study_index, series_number)
                series_total += 1
                for instance_number in range(1, rng.randint(3, 12) + 1):
                    if len(files) >= count:
                        break
                    ds = pydicom.dcmread(BytesIO(raw[template]))
                    sop_uid = _uid(seed, "sop", len(files))
                    _personalise(
                        ds, study, series_uid, frame_uid, sop_uid, series_number, instance_number
                    )
                    path = root / f"{len(files):06d}.dcm"
                    ds.save_as(path, enforce_file_format=True)
                    size += path.stat().st_size
                    files.append(path)
                    used[template] = used.get(template, 0) + 1
                if len(files) >= count:
                    break
            if len(files) >= count:
                break
    return CorpusSummary(
        root, files, patients, studies, series_total, size, dict(sorted(used.items()))
    )


if __name__ == "__main__":  # python benchmarks/_corpus.py DIR [COUNT]
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    summary = build_corpus(target, int(sys.argv[2]) if len(sys.argv) > 2 else 800)
    print(
        f"{len(summary.files)} files, {summary.patients} patients, {summary.studies} studies, "
        f"{summary.series} series, {summary.bytes / 1e6:.1f} MB in {target}"
    )
    for name, n in summary.templates.items():
        print(f"  {n:5d}  {name}")
