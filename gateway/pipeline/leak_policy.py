"""Where a value of each kind counts as a leak: the release gate's decision table.

A needle found in the output is a leak or a coincidence depending on what the needle is (its
:class:`ValueKind`) and on the field it was found in (:class:`FieldKind`). The MRN, a UID or the
patient's full name count wherever they stand; a part of the patient's name, an institution or
another person's name count in text and identifying fields but not inside coded terms or the
device's own description (Manufacturer "TOSHIBA_MEC" is not the site "TOSHIBA"); placeholder
text left in a name attribute counts only as the whole value of a name or identifying field.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache

from pydicom.datadict import keyword_for_tag

from gateway.dicom import vr as V
from gateway.dicom.deidentify import is_identifying
from gateway.dicom.needles import ValueKind


class FieldKind(str, Enum):
    """What an output element holds, for the gate's purposes."""

    FREE_TEXT = "free-text"
    IDENTIFYING = "identifying"
    PERSON_NAME = "person-name"
    CODED = "coded"
    DEVICE = "device"
    DATE = "date"
    UID = "UID"
    BINARY = "binary"


class Match(str, Enum):
    TOKEN = "token in text"  # anywhere on word boundaries
    WHOLE = "whole value"  # the whole value (or one of its values) equals the needle
    UNPRODUCED = "date value not written by the date shift"  # token, unless the stage wrote it
    NEVER = "never"


# The device's own description, kept by every profile (not in Table E.1-1).
DEVICE_KEYWORDS = frozenset(
    {
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "SecondaryCaptureDeviceManufacturer",
        "SecondaryCaptureDeviceManufacturerModelName",
        "SecondaryCaptureDeviceSoftwareVersions",
        "ImplementationVersionName",
        "DetectorManufacturerName",
        "DetectorManufacturerModelName",
    }
)
FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})

_T, _W, _D, _N = Match.TOKEN, Match.WHOLE, Match.UNPRODUCED, Match.NEVER
F = FieldKind
_COLUMNS = (F.FREE_TEXT, F.IDENTIFYING, F.PERSON_NAME, F.CODED, F.DEVICE, F.DATE, F.UID, F.BINARY)
# fmt: off
_ROWS: dict[ValueKind, tuple[Match, ...]] = {
    #                       free  ident  PN  coded device date  UID  binary
    ValueKind.PATIENT_NAME: (_T,   _T,   _T,  _T,   _T,   _N,   _N,  _T),
    ValueKind.NAME_PART:    (_T,   _T,   _T,  _N,   _N,   _N,   _N,  _T),
    ValueKind.PERSON_NAME:  (_T,   _T,   _T,  _N,   _N,   _N,   _N,  _T),
    ValueKind.PLACEHOLDER:  (_N,   _W,   _W,  _N,   _N,   _N,   _N,  _N),
    ValueKind.IDENTIFIER:   (_T,   _T,   _T,  _T,   _T,   _N,   _W,  _T),
    ValueKind.DATE:         (_T,   _T,   _N,  _T,   _N,   _D,   _N,  _T),
    ValueKind.UID:          (_T,   _T,   _T,  _T,   _T,   _N,   _W,  _T),
    ValueKind.ADDRESS:      (_T,   _T,   _T,  _N,   _N,   _N,   _N,  _T),
    ValueKind.INSTITUTION:  (_T,   _T,   _T,  _N,   _N,   _N,   _N,  _T),
    ValueKind.OTHER:        (_T,   _T,   _T,  _N,   _N,   _N,   _N,  _T),
}
# fmt: on
POLICY: dict[tuple[ValueKind, FieldKind], Match] = {
    (kind, column): match
    for kind, row in _ROWS.items()
    for column, match in zip(_COLUMNS, row, strict=True)
}

_BY_VR = {
    "PN": F.PERSON_NAME,
    "DA": F.DATE,
    "DT": F.DATE,
    "UI": F.UID,
    "AE": F.IDENTIFYING,  # application entity titles name devices on the network
    "CS": F.CODED,
    **{vr: F.BINARY for vr in V.BINARY_VRS},
    **{vr: F.FREE_TEXT for vr in FREE_TEXT_VRS},
}


@lru_cache(maxsize=8192)
def field_kind(tag: int, vr: str) -> FieldKind:
    """What the output element ``tag`` of VR ``vr`` holds."""
    keyword = keyword_for_tag(tag) or ""
    if keyword in DEVICE_KEYWORDS:
        return F.DEVICE
    if keyword in V.CODED_KEYWORDS:
        return F.CODED
    by_vr = _BY_VR.get(vr)
    if by_vr is not None:
        return by_vr
    return F.IDENTIFYING if is_identifying(keyword, vr) else F.FREE_TEXT


def match_for(kind: ValueKind, field: FieldKind) -> Match:
    return POLICY[(kind, field)]
