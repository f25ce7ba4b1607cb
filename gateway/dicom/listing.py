"""A dataset as flat rows, ``(gggg,eeee)[i](gggg,eeee)`` -> (keyword, value text): what the CLI
preview prints and the workbench's header table compares, before and after."""

from __future__ import annotations

from pydicom.dataset import Dataset

from gateway.dicom import tags as T

VALUE_CHARS = 60


def flatten(ds: Dataset, prefix: str = "") -> dict[str, tuple[str, str]]:
    """Every element, sequences item by item; pixel data and bytes by their size only."""
    out: dict[str, tuple[str, str]] = {}
    for key in ds.keys():
        tag = int(key)
        where = f"{prefix}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if tag == T.PIXEL_DATA:
            out[where] = ("PixelData", "<pixel data>")
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            out[where] = (elem.keyword or "", f"<{len(elem.value)} item(s)>")
            for index, item in enumerate(elem.value):
                out.update(flatten(item, f"{where}[{index}]"))
            continue
        value = elem.value
        text = f"<{len(value)} bytes>" if isinstance(value, bytes) else str(value)
        out[where] = (elem.keyword or "private", text[:VALUE_CHARS])
    return out
