"""The attributes that say an instance was de-identified, and how (PS3.15 E.1.1, CID 7050)."""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.dicom import tags as T
from gateway.dicom.deidentify import DeidResult
from gateway.dicom.rules import RuleSet
from gateway.dicom.values import read_values
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
    """Set the markers. An instance de-identified before keeps its history (PS3.15 E.1.1): the
    earlier DeidentificationMethodCodeSequence items stay and the new codes are appended (no
    duplicates); DeidentificationMethod keeps its earlier values beside the new one."""
    codes = _earlier_codes(ds)
    held = {_code_key(item) for item in codes}
    for option in applied_options(rules, pixels_cleaned):
        value, meaning = CID_7050[option]
        if ("DCM", value) in held:
            continue
        item = Dataset()
        for tag, vr, text in (
            (T.CODE_VALUE, "SH", value),
            (T.CODING_SCHEME_DESIGNATOR, "SH", "DCM"),
            (T.CODE_MEANING, "LO", meaning),
        ):
            item[tag] = DataElement(tag, vr, text)
        codes.append(item)
        held.add(("DCM", value))
    methods = [m for m in read_values(ds, T.DEIDENTIFICATION_METHOD, "LO") if m]
    if rules.method_description not in methods:
        methods.append(rules.method_description)
    markers: list[tuple[int, str, object]] = [
        (T.PATIENT_IDENTITY_REMOVED, "CS", "YES"),
        (T.DEIDENTIFICATION_METHOD, "LO", methods if len(methods) > 1 else methods[0]),
        (T.DEIDENTIFICATION_METHOD_CODE_SEQUENCE, "SQ", codes),
        (
            T.LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
            "CS",
            _temporal_status(ds, longitudinal_status(rules, result)),
        ),
    ]
    if pixels_cleaned:
        markers.append((T.BURNED_IN_ANNOTATION, "CS", "NO"))
    for tag, vr, content in markers:
        ds[tag] = DataElement(tag, vr, content)


def _earlier_codes(ds: Dataset) -> Sequence:
    """The code items of an earlier de-identification, as the header stage left them."""
    if T.DEIDENTIFICATION_METHOD_CODE_SEQUENCE not in ds:
        return Sequence()
    earlier = ds[T.DEIDENTIFICATION_METHOD_CODE_SEQUENCE].value or []
    kept = Sequence()
    seen: set[tuple[str, str]] = set()
    for item in earlier:
        key = _code_key(item)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _code_key(item: Dataset) -> tuple[str, str]:
    return (
        "\\".join(read_values(item, T.CODING_SCHEME_DESIGNATOR, "SH")),
        "\\".join(read_values(item, T.CODE_VALUE, "SH")),
    )


# An earlier modification or removal of dates is not undone by a profile that keeps dates.
_DATES_CHANGED = frozenset({"MODIFIED", "REMOVED"})


def _temporal_status(ds: Dataset, now: str) -> str:
    earlier = read_values(ds, T.LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, "CS")
    if now == "UNMODIFIED" and earlier and earlier[0] in _DATES_CHANGED:
        return earlier[0]
    return now
