"""Tags of the attributes that code refers to by name, as plain ints.

Looked up once, by keyword, in pydicom's dictionary. Per-instance code indexes and tests
membership by int: a keyword (``ds.PatientID``, ``ds.get("PatientID")``) goes through
``Dataset.__getattr__`` and a dictionary lookup on every access.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword


def tag(keyword: str) -> int:
    found = tag_for_keyword(keyword)
    if found is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return int(found)


# file meta
FILE_META_GROUP_LENGTH = tag("FileMetaInformationGroupLength")
FILE_META_VERSION = tag("FileMetaInformationVersion")
MEDIA_STORAGE_SOP_CLASS_UID = tag("MediaStorageSOPClassUID")
MEDIA_STORAGE_SOP_INSTANCE_UID = tag("MediaStorageSOPInstanceUID")
TRANSFER_SYNTAX_UID = tag("TransferSyntaxUID")
IMPLEMENTATION_CLASS_UID = tag("ImplementationClassUID")
IMPLEMENTATION_VERSION_NAME = tag("ImplementationVersionName")

# identity
SPECIFIC_CHARACTER_SET = tag("SpecificCharacterSet")
SOP_CLASS_UID = tag("SOPClassUID")
SOP_INSTANCE_UID = tag("SOPInstanceUID")
STUDY_INSTANCE_UID = tag("StudyInstanceUID")
SERIES_INSTANCE_UID = tag("SeriesInstanceUID")
PATIENT_ID = tag("PatientID")
ISSUER_OF_PATIENT_ID = tag("IssuerOfPatientID")

# what the policy drops
DIRECTORY_RECORD_SEQUENCE = tag("DirectoryRecordSequence")
ENCAPSULATED_DOCUMENT = tag("EncapsulatedDocument")

# de-identification markers (PS3.15 E.1.1) and CID 7050 code items
PATIENT_IDENTITY_REMOVED = tag("PatientIdentityRemoved")
DEIDENTIFICATION_METHOD = tag("DeidentificationMethod")
DEIDENTIFICATION_METHOD_CODE_SEQUENCE = tag("DeidentificationMethodCodeSequence")
LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED = tag("LongitudinalTemporalInformationModified")
BURNED_IN_ANNOTATION = tag("BurnedInAnnotation")
CODE_VALUE = tag("CodeValue")
CODING_SCHEME_DESIGNATOR = tag("CodingSchemeDesignator")
CODE_MEANING = tag("CodeMeaning")

# pixels
PIXEL_DATA = tag("PixelData")
PIXEL_DATA_TAGS = (PIXEL_DATA, tag("FloatPixelData"), tag("DoubleFloatPixelData"))
