"""Results a research partner makes on delivered (pseudonymised) data: a DICOM SEG built with
highdicom on the delivered CT series, and a FHIR Observation on the delivered Patient."""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from tests.dicom_fixtures import Patient, phi_instance


def ct_series(patient: Patient, study_key: str, count: int = 2) -> list[Dataset]:
    """A CT series of ``count`` slices 5 mm apart (pydicom's CT_small, PHI-laden header)."""
    out: list[Dataset] = []
    for number in range(1, count + 1):
        ds = phi_instance("CT_small.dcm", patient, study_key, "CT", number, out[0] if out else None)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * (number - 1)]
        ds.SliceLocation = z + 5.0 * (number - 1)
        out.append(ds)
    return out


def seg_on(images: list[Dataset]) -> Dataset:
    """A binary SEG of one segment (a box on every slice) on ``images``, as a partner's AI
    would make it with highdicom: it copies the patient and study of its source images."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    images = sorted(images, key=lambda d: float(d.ImagePositionPatient[2]))
    mask = np.zeros((len(images), int(images[0].Rows), int(images[0].Columns)), dtype=bool)
    mask[:, 30:60, 40:80] = True
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="partner-ai", version="1.0", family=codes.cid7162.ArtificialIntelligence
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Partner AI",
        manufacturer_model_name="seg-model",
        software_versions="1.0",
        device_serial_number="42",
        series_description="AI lesion segmentation",
    )
    return pydicom.dcmread(_bytes(seg))


def _bytes(ds: Dataset) -> Any:
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def observation_on(patient_ref: str, imaging_study_ref: str | None = None) -> dict[str, Any]:
    """A partner's finding on the delivered Patient (their own free text in the note)."""
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "partner-finding-1",
        "status": "final",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "108369006",
                             "display": "Neoplasm"}]},
        "subject": {"reference": patient_ref},
        "valueString": "lesion 12 mm, likely benign",
        "note": [{"text": "found by partner-ai 1.0 on the delivered series"}],
    }
    if imaging_study_ref:
        observation["derivedFrom"] = [{"reference": imaging_study_ref}]
    return observation


def referenced_instances(seg: Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID of the SEG (ReferencedSeriesSequence and the per-frame
    SourceImageSequence)."""
    found: set[str] = set()

    def walk(ds: Dataset) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.keyword == "ReferencedSOPInstanceUID":
                found.add(str(elem.value))

    walk(seg)
    return found


def sr_citing(cited: Dataset, text: str = "lesion as segmented, 12 mm") -> Dataset:
    """A partner's Comprehensive SR on the study of ``cited`` (its SEG, say) that cites it: in
    the evidence sequence (study / series / instance) and in an IMAGE content item, with the
    partner's free text beside it."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sr = Dataset()
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    sr.SOPInstanceUID = generate_uid()
    sr.Modality = "SR"
    sr.SeriesInstanceUID = generate_uid()
    sr.SeriesNumber = 101
    sr.InstanceNumber = 1
    sr.SeriesDescription = "AI report"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName"):
        setattr(sr, keyword, cited.get(keyword, ""))
    sr.CompletionFlag = "COMPLETE"
    sr.VerificationFlag = "UNVERIFIED"
    sr.ValueType = "CONTAINER"
    sr.ContinuityOfContent = "SEPARATE"
    sr.ConceptNameCodeSequence = Sequence([_code("126000", "DCM", "Imaging Measurement Report")])
    instance = Dataset()
    instance.ReferencedSOPClassUID = cited.SOPClassUID
    instance.ReferencedSOPInstanceUID = cited.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = cited.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([instance])
    study = Dataset()
    study.StudyInstanceUID = cited.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    sr.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    image = Dataset()
    image.RelationshipType = "CONTAINS"
    image.ValueType = "IMAGE"
    image.ConceptNameCodeSequence = Sequence([_code("121233", "DCM", "Source image for segmentation")])
    cited_item = Dataset()
    cited_item.ReferencedSOPClassUID = cited.SOPClassUID
    cited_item.ReferencedSOPInstanceUID = cited.SOPInstanceUID
    image.ReferencedSOPSequence = Sequence([cited_item])
    note = Dataset()
    note.RelationshipType = "CONTAINS"
    note.ValueType = "TEXT"
    note.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    note.TextValue = text
    sr.ContentSequence = Sequence([image, note])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sr.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta = meta
    return sr


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code
