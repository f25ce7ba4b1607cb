"""Recognise and read DICOM by content (never by extension), with typed reasons for bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.dicom import tags as T
from gateway.errors import QuarantineError, ReasonCode

DEFER_SIZE = "256 KB"
DEFLATED = "1.2.840.10008.1.2.1.99"  # big values (pixel data) stay on disk until written
# (implicit VR, little endian) of a dataset read without file meta -> its transfer syntax
BARE_SYNTAXES = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


def has_dicm_preamble(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def looks_like_raw_dicom(path: Path) -> bool:
    """A dataset without preamble/meta (still DICOM, but not a valid Part 10 file)."""
    try:
        ds = pydicom.dcmread(
            path,
            force=True,
            stop_before_pixels=True,
            specific_tags=["SOPInstanceUID", "SOPClassUID"],
        )
    except Exception:  # noqa: BLE001 - anything unreadable is simply not raw DICOM
        return False
    return bool(ds.get("SOPClassUID") or ds.get("SOPInstanceUID"))


def read_dicom(path: Path) -> Dataset:
    try:
        ds = _read(path)
    except (EOFError, struct.error, OSError) as exc:
        raise QuarantineError(
            ReasonCode.TRUNCATED, "file ends before the dataset does", stage="intake"
        ) from exc
    except (ValueError, UnicodeError, KeyError, TypeError) as exc:
        raise QuarantineError(
            ReasonCode.UNDECODABLE_VALUE, "a value cannot be decoded", stage="intake"
        ) from exc
    _check_complete(ds, path)
    decode_if_mislabelled(ds)
    return ds


def _read(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, defer_size=DEFER_SIZE)  # refuses a file without "DICM"
    except InvalidDicomError as exc:
        if has_dicm_preamble(path):
            raise QuarantineError(
                ReasonCode.MISSING_META, "invalid file meta information", stage="intake"
            ) from exc
        if not looks_like_raw_dicom(path):
            raise QuarantineError(ReasonCode.NOT_DICOM, "not a DICOM file", stage="intake") from exc
    return _read_bare(path)


def _read_bare(path: Path) -> Dataset:
    """A dataset without preamble and file meta (as old archives hold): pydicom tells the
    encoding from the first element (implicit / explicit VR, little / big endian); the file
    meta a Part 10 file needs is written from it. Compressed pixel data without a transfer
    syntax cannot be decoded by anyone: that is quarantined."""
    ds = pydicom.dcmread(path, defer_size=DEFER_SIZE, force=True)
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if T.TRANSFER_SYNTAX_UID not in meta:
        if _encapsulated_pixels(ds):
            raise QuarantineError(
                ReasonCode.MISSING_META,
                "compressed pixel data without file meta: transfer syntax unknown",
                stage="intake",
            )
        implicit, little = ds.original_encoding
        syntax = BARE_SYNTAXES[(bool(implicit), bool(little))]
        meta[T.TRANSFER_SYNTAX_UID] = DataElement(T.TRANSFER_SYNTAX_UID, "UI", syntax)
    for meta_tag, tag in (
        (T.MEDIA_STORAGE_SOP_CLASS_UID, T.SOP_CLASS_UID),
        (T.MEDIA_STORAGE_SOP_INSTANCE_UID, T.SOP_INSTANCE_UID),
    ):
        if meta_tag not in meta and tag in ds:
            meta[meta_tag] = DataElement(meta_tag, "UI", ds[tag].value)
    return ds


def _encapsulated_pixels(ds: Dataset) -> bool:
    raw = ds.get_item(T.PIXEL_DATA, keep_deferred=True)
    if raw is None:
        return False
    if isinstance(raw, RawDataElement):
        return raw.length == 0xFFFFFFFF
    return bool(raw.is_undefined_length)


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
            if (
                raw.is_implicit_VR != syntax.is_implicit_VR
                or raw.is_little_endian != syntax.is_little_endian
            ):
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
    keys = list(ds.keys())
    last = keys[-1] if keys else None  # in the order read
    if last is None:
        return
    raw = ds.get_item(last, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
        return
    if raw.value is None:
        if raw.value_tell + raw.length > path.stat().st_size:
            raise QuarantineError(
                ReasonCode.TRUNCATED, "file ends before the dataset does", stage="intake"
            )
    elif len(raw.value) < raw.length:
        raise QuarantineError(
            ReasonCode.TRUNCATED, "file ends before the dataset does", stage="intake"
        )
