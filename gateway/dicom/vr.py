"""Value representation facts the de-identifier needs (PS3.5 6.2)."""

from __future__ import annotations

TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN"})
DATE_VRS = frozenset({"DA", "DT"})
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "IS", "DS", "AT"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "LO": 64, "SH": 16, "PN": 64, "ST": 1024, "LT": 10240}

DUMMY_TEXT = "ANONYMIZED"
DUMMY = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "TM": "000000",
    "UR": "",
}

DUMMY_VALUES = frozenset({DUMMY_TEXT, *DUMMY.values()})

# Coded vocabulary inside sequences is not free text: never dummied or cleaned by context.
CODED_KEYWORDS = frozenset(
    {
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "LongCodeValue",
        "URNCodeValue",
        "MappingResource",
        "MappingResourceName",
        "ContextIdentifier",
        "ContextGroupVersion",
        "ValueType",
        "RelationshipType",
        "ContinuityOfContent",
        "TemplateIdentifier",
    }
)

# UI attributes naming a class or syntax, not an instance: never remapped.
CLASS_UID_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "AffectedSOPClassUID",
        "RequestedSOPClassUID",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "PrivateInformationCreatorUID",
        "ApplicationSetupCheck",
        "SelectorUIValue",
    }
)
WELL_KNOWN_UID_PREFIX = "1.2.840.10008."


def dummy_for(vr: str) -> object:
    if vr in DUMMY:
        return DUMMY[vr]
    if vr in TEXT_VRS:
        return DUMMY_TEXT
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 0
    if vr in ("FL", "FD"):
        return 0.0
    if vr in BINARY_VRS:
        return b""
    return ""


def fit(vr: str, value: str) -> str:
    limit = MAX_LENGTH.get(vr)
    return value[:limit] if limit else value
