"""The attributes that say an instance was de-identified, and how (PS3.15 E.1.1, CID 7050)."""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.dicom import tags as T
from gateway.dicom.deidentify import DeidResult
from gateway.dicom.rules import RuleSet
from gateway.profiles.model import CID_7050, ProfileOption

# Options whose code may only be claimed when a stage really did the work for this instance.
CLAIMED_BY_STAGE = {
    ProfileOption.CLEAN_PIXEL_DATA.value,
    ProfileOption.CLEAN_RECOGNIZABLE_VISUAL_FEATURES.value,
}


def applied_options(rules: RuleSet, pixels_cleaned: bool) -> list[str]:
    applied = ["basic"]
    for option in rules.profile.dicom.options:
        if option.value not in CLAIMED_BY_STAGE:
            applied.append(option.value)
    if pixels_cleaned:
        applied.append(ProfileOption.CLEAN_PIXEL_DATA.value)
    return sorted(applied, key=lambda o: CID_7050[o][0])


def longitudinal_status(rules: RuleSet, result: DeidResult) -> str:
    if rules.has(ProfileOption.RETAIN_LONGITUDINAL_FULL_DATES):
        return "UNMODIFIED"
    if result.dates_changed:
        return "MODIFIED"
    return "REMOVED"


def add_markers(ds: Dataset, rules: RuleSet, result: DeidResult, pixels_cleaned: bool) -> None:
    codes = Sequence()
    for option in applied_options(rules, pixels_cleaned):
        value, meaning = CID_7050[option]
        item = Dataset()
        for tag, vr, text in (
            (T.CODE_VALUE, "SH", value),
            (T.CODING_SCHEME_DESIGNATOR, "SH", "DCM"),
            (T.CODE_MEANING, "LO", meaning),
        ):
            item[tag] = DataElement(tag, vr, text)
        codes.append(item)
    markers: list[tuple[int, str, object]] = [
        (T.PATIENT_IDENTITY_REMOVED, "CS", "YES"),
        (T.DEIDENTIFICATION_METHOD, "LO", rules.method_description),
        (T.DEIDENTIFICATION_METHOD_CODE_SEQUENCE, "SQ", codes),
        (T.LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, "CS", longitudinal_status(rules, result)),
    ]
    if pixels_cleaned:
        markers.append((T.BURNED_IN_ANNOTATION, "CS", "NO"))
    for tag, vr, marker in markers:
        ds[tag] = DataElement(tag, vr, marker)
