"""A DICOM result returned by a partner, made a clinical object of the original patient.

The patient module and the study attributes come from the vault (noted when the study was
de-identified); every UID that references what the gateway delivered (the study, the
referenced series, instances, frames of reference, wherever they stand: ReferencedSeries-,
ReferencedSOP-, ReferencedInstance-, SourceImageSequence, derivation and evidence sequences)
maps back to its original, and one that references an object the partner returned before (an
SR citing its SEG) to the new UID that object got; the object's own UIDs (SOPInstanceUID, SeriesInstanceUID and every
other UID the partner made) get new UIDs in the hospital's root. It is marked as a research
result (SeriesDescription prefix, a ContributingEquipmentSequence item) and its
de-identification markers are removed (it is identified now). Free text is left as the
partner wrote it: nothing is written into it.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from gateway import __version__
from gateway.broker.resolve import STAGE, ReturnResolver
from gateway.config import ReturnsConfig
from gateway.dicom.originals import PATIENT_MODULE, STUDY_MODULE
from gateway.errors import QuarantineError, ReasonCode
from gateway.linkage.issued import IssuedKind

#: What a partner may return (SOP Class UID -> name): SEG, SR, GSPS, KOS, secondary captures.
RETURNABLE_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit SC Image",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte SC Image",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word SC Image",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color SC Image",
}

#: UIDs that name a class, a syntax or a coding scheme: never an instance, never mapped.
CLASS_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "CodingSchemeUID",
        "ContextGroupExtensionCreatorUID",
        "MappingResourceUID",
        "ImplementationClassUID",
        "PrivateInformationCreatorUID",
        "SOPClassesInStudy",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
    }
)
#: The object's own identity: always new UIDs in the hospital's root.
OWN_KEYWORDS = frozenset({"SOPInstanceUID", "SeriesInstanceUID"})
#: UIDs that reference something delivered: an unknown one quarantines the result.
REFERENCE_KEYWORDS = frozenset(
    {
        "ReferencedSOPInstanceUID",
        "ReferencedSOPInstanceUIDInFile",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "ReferencedFrameOfReferenceUID",
        "RelatedFrameOfReferenceUID",
        "ReferencedStudyInstanceUID",
    }
)
STANDARD_PREFIX = "1.2.840.10008."
#: Type 2 attributes of the General Study module: present, empty when the vault has no value.
STUDY_TYPE2 = frozenset(
    {"StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"}
)
DEID_MARKERS = (
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)


def returnable(ds: Dataset) -> None:
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class not in RETURNABLE_CLASSES:
        raise QuarantineError(
            ReasonCode.UNSUPPORTED_INPUT,
            "returned DICOM must be SEG, SR, GSPS, KOS or a secondary capture",
            stage=STAGE,
        )


def map_back(
    ds: Dataset, resolver: ReturnResolver, settings: ReturnsConfig, destination: str
) -> Dataset:
    """Map ``ds`` (in place: it was read for this) back to the clinic; QuarantineError when a
    reference is unknown or another destination's."""
    returnable(ds)
    study_uid = str(ds.get("StudyInstanceUID", "") or "")
    if not study_uid:
        raise QuarantineError(ReasonCode.MISSING_UID, "no StudyInstanceUID", stage=STAGE)
    study = resolver.require(study_uid, (IssuedKind.UID,), "StudyInstanceUID")
    patient_pseudonym = study.context.get("PatientPseudonym", "")
    patient = resolver.require(patient_pseudonym, (IssuedKind.PATIENT,), "the study's patient")
    stated = str(ds.get("PatientID", "") or "")
    if stated and stated != patient_pseudonym:
        raise QuarantineError(
            ReasonCode.UNKNOWN_PSEUDONYM,
            "PatientID is not the pseudonym of the referenced study's patient",
            stage=STAGE,
        )
    _walk(ds, resolver, top=True)
    _set_modules(ds, patient.context, {**study.context, "StudyInstanceUID": study.original})
    _mark(ds, settings, destination)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _walk(ds: Dataset, resolver: ReturnResolver, top: bool) -> None:
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or []:
                _walk(item, resolver, top=False)
            continue
        keyword = elem.keyword
        if keyword == "AccessionNumber" and not top and elem.value:
            found = resolver.find(str(elem.value), (IssuedKind.ACCESSION,))
            if found is not None:
                elem.value = found.original
            continue
        if elem.VR != "UI" or keyword in CLASS_KEYWORDS or not elem.value:
            continue
        if top and keyword == "StudyInstanceUID":
            continue  # set from the vault with the study module
        values = list(elem.value) if isinstance(elem.value, MultiValue) else [str(elem.value)]
        mapped = [_uid(str(v), keyword, resolver, top) for v in values]
        ds[elem.tag] = DataElement(elem.tag, "UI", mapped if len(mapped) > 1 else mapped[0])


def _uid(value: str, keyword: str, resolver: ReturnResolver, top: bool) -> str:
    value = value.strip().rstrip("\x00")
    if value.startswith(STANDARD_PREFIX):
        return value
    if top and keyword in OWN_KEYWORDS:
        return resolver.mint_uid(value)
    if keyword in REFERENCE_KEYWORDS and not (top and keyword == "FrameOfReferenceUID"):
        return resolver.map_uid(value, keyword)  # delivered, or returned by the partner
    found = resolver.find(value, (IssuedKind.UID,))
    if found is not None:
        return found.original
    return resolver.returned_uid(value) or resolver.mint_uid(value)  # the partner's own


def _set_modules(ds: Dataset, patient: dict[str, str], study: dict[str, str]) -> None:
    for keyword in PATIENT_MODULE:
        if keyword in patient:
            setattr(ds, keyword, patient[keyword])
        elif keyword in ds:
            delattr(ds, keyword)
    for keyword in STUDY_MODULE:
        if keyword in study:
            setattr(ds, keyword, study[keyword])
        elif keyword in STUDY_TYPE2:
            setattr(ds, keyword, "")
        elif keyword in ds:
            delattr(ds, keyword)


def _mark(ds: Dataset, settings: ReturnsConfig, destination: str) -> None:
    """A research result, visibly: in the series description and in the equipment that
    contributed to it (PS3.3 C.12.1.1.5)."""
    described = str(ds.get("SeriesDescription", "") or "")
    prefix = settings.series_description_prefix
    if not described.startswith(prefix):
        ds.SeriesDescription = (prefix + described)[:64]
    item = Dataset()
    item.Manufacturer = "deid-gateway"
    item.ManufacturerModelName = "honest broker (results return)"
    item.SoftwareVersions = __version__
    # no ContributionDateTime (Type 3): a resend of the same result is the same bytes
    item.ContributionDescription = f"research result returned by destination {destination}"[:64]
    purpose = Dataset()
    purpose.CodeValue = "109103"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Modifying Equipment"
    item.PurposeOfReferenceCodeSequence = Sequence([purpose])
    equipment = ds.get("ContributingEquipmentSequence")
    ds.ContributingEquipmentSequence = Sequence([*(equipment or []), item])
    ds.PatientIdentityRemoved = "NO"
    for keyword in DEID_MARKERS:
        if keyword in ds:
            delattr(ds, keyword)
