"""The file meta of an output file names the gateway as the implementation that wrote it.

PS3.10 7.1: Implementation Class UID / Version Name identify the writer of the file, and the
Source Application Entity Title the AE that wrote it; the preamble is free-form. Copied from the input they name the
sending device and its software (a side channel) and make the same instance come out
differently by the door it came through (a file from disk and the same instance by C-STORE,
whose meta the SCP built). The output is a new file written by the gateway: it says so.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from gateway import __version__

#: A fixed UID for this implementation (2.25 form, from UUIDv5 of "urn:deid-gateway:implementation").
IMPLEMENTATION_CLASS_UID = "2.25.221319139268350885711540511990270098924"
IMPLEMENTATION_VERSION_NAME = f"DEIDGW_{__version__}"[:16]

IMPLEMENTATION_CLASS_UID_TAG = 0x00020012
IMPLEMENTATION_VERSION_NAME_TAG = 0x00020013
SOURCE_AE_TITLE_TAG = 0x00020016


def stamp_writer(ds: Dataset) -> None:
    """Name the gateway as the writer; drop the input writer's AE title; a zero preamble (the
    128 bytes before "DICM" are free for any use, a TIFF header or anything else: they are
    not carried over)."""
    ds.preamble = b"\0" * 128
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    meta[IMPLEMENTATION_CLASS_UID_TAG] = DataElement(
        IMPLEMENTATION_CLASS_UID_TAG, "UI", IMPLEMENTATION_CLASS_UID
    )
    meta[IMPLEMENTATION_VERSION_NAME_TAG] = DataElement(
        IMPLEMENTATION_VERSION_NAME_TAG, "SH", IMPLEMENTATION_VERSION_NAME
    )
    if SOURCE_AE_TITLE_TAG in meta:
        del meta[SOURCE_AE_TITLE_TAG]
