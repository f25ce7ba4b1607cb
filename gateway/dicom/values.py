"""Reading element values without pydicom's conversion when the bytes say all there is.

An element converted by pydicom stays converted and must be re-encoded on write; one left raw is
copied as read. So values are read straight from the raw bytes when that is exact: ASCII VRs
always, text VRs when the dataset uses one character set without ISO 2022 code extensions.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN"})
SINGLE_VALUED = frozenset({"LT", "ST", "UT"})  # backslash is text there, not a delimiter


@lru_cache(maxsize=8192)
def dictionary_vr(tag: int) -> str:
    """The dictionary VR of a tag (first of "US or SS"); UN when unknown. Cached: the same few
    hundred tags come by millions of times."""
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError:
        return "UN"


def element_vr(ds: Dataset, tag: int) -> str:
    """The element's VR without converting it; an explicit UN is resolved from the dictionary,
    as pydicom does when it converts the element."""
    vr = getattr(ds.get_item(tag, keep_deferred=True), "VR", None)
    return str(vr) if vr and vr != "UN" else dictionary_vr(tag)


def codecs_of(ds: Dataset) -> list[str]:
    """Python codecs of the dataset's SpecificCharacterSet (pydicom gives a str or a list)."""
    found = getattr(ds, "_character_set", None) or "iso8859"
    return [found] if isinstance(found, str) else list(found)


def _single_codec(ds: Dataset) -> str | None:
    codecs = codecs_of(ds)
    if len(codecs) == 1 and "2022" not in codecs[0]:
        return codecs[0]
    return None


def read_values(
    ds: Dataset, tag: int, vr: str, elem: DataElement | RawDataElement | None = None
) -> list[str]:
    """The element's values as stripped strings, empty ones dropped (none when absent). ``elem``: the element
    when the caller holds it already (saves a lookup by tag)."""
    raw = ds.get_item(tag, keep_deferred=True) if elem is None else elem
    if raw is None:
        return []  # absent
    if isinstance(raw, RawDataElement) and raw.value is not None:
        codec = "ascii" if vr in ASCII_VRS else (_single_codec(ds) if vr in TEXT_VRS else None)
        if codec is not None:
            text = raw.value.decode(codec, errors="replace")
            parts = [text] if vr in SINGLE_VALUED else text.split("\\")
            return [p.strip(" \x00") for p in parts if p.strip(" \x00")]
    value = ds[tag].value
    items = list(value) if isinstance(value, (list, MultiValue)) else [value]
    return [str(v).strip() for v in items if v is not None and str(v).strip()]
