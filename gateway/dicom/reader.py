"""Recognise and read DICOM by content (never by extension), with typed reasons for bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from gateway.errors import QuarantineError, ReasonCode

DEFER_SIZE = "256 KB"
DEFLATED = "1.2.840.10008.1.2.1.99"  # big values (pixel data) stay on disk until written


def has_dicm_preamble(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def looks_like_raw_dicom(path: Path) -> bool:
    """A dataset without preamble/meta (still DICOM, but not a valid Part 10 file)."""
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SOPClassUID"])
    except Exception:
        return False
    return bool(ds.get("SOPClassUID") or ds.get("SOPInstanceUID"))


def read_dicom(path: Path) -> Dataset:
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)  # refuses a file without "DICM"
    except InvalidDicomError as exc:
        if has_dicm_preamble(path):
            raise QuarantineError(ReasonCode.MISSING_META, "invalid file meta information", stage="intake") from exc
        if looks_like_raw_dicom(path):
            raise QuarantineError(ReasonCode.MISSING_META, "no DICOM preamble / file meta information", stage="intake") from exc
        raise QuarantineError(ReasonCode.NOT_DICOM, "not a DICOM file", stage="intake") from exc
    except (EOFError, struct.error, OSError) as exc:
        raise QuarantineError(ReasonCode.TRUNCATED, "file ends before the dataset does", stage="intake") from exc
    except (ValueError, UnicodeError, KeyError, TypeError) as exc:
        raise QuarantineError(ReasonCode.UNDECODABLE_VALUE, "a value cannot be decoded", stage="intake") from exc
    _check_complete(ds, path)
    decode_if_mislabelled(ds)
    return ds


def decode_if_mislabelled(ds: Dataset) -> None:
    """A file whose elements are implicit VR under an explicit transfer syntax (pydicom reads it
    with a warning) cannot be written back raw: decode every element once, so the writer
    encodes them in the declared syntax. Well-formed files are left raw (fast path)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or not syntax.is_transfer_syntax:
        return
    for key in ds.keys():
        raw = ds.get_item(key, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            if raw.is_implicit_VR != syntax.is_implicit_VR or raw.is_little_endian != syntax.is_little_endian:
                for _ in ds.iterall():
                    pass
            return


def _check_complete(ds: Dataset, path: Path) -> None:
    """pydicom reads a short value without complaint, and a deferred (large) one only at write
    time: a truncated file would be written short. The reader stops at the end of the file, so
    only the element read last can be cut: a deferred value seeks past the end and nothing
    follows it; a short value is the last one read."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
        return  # positions are in the inflated stream; pydicom read it whole already
    last = next(reversed(ds.keys()), None)  # in the order read
    if last is None:
        return
    raw = ds.get_item(last, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
        return
    if raw.value is None:
        if raw.value_tell + raw.length > path.stat().st_size:
            raise QuarantineError(ReasonCode.TRUNCATED, "file ends before the dataset does", stage="intake")
    elif len(raw.value) < raw.length:
        raise QuarantineError(ReasonCode.TRUNCATED, "file ends before the dataset does", stage="intake")
