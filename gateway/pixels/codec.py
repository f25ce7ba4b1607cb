"""Decode every frame of an instance and write redacted frames back, losslessly.

Decoding goes through pydicom's decoder plug-ins (pylibjpeg, python-gdcm, the native RLE and
uncompressed decoders) with ``as_rgb``: YBR_FULL / YBR_FULL_422 come back as RGB, YBR_ICT/RCT as
RGB (the JPEG 2000 codec undoes its component transform), PALETTE COLOR as its indices.
Writing stores exactly the decoded array (plus the redactions) as Explicit VR Little Endian, or
RLE Lossless or JPEG 2000 Lossless (where the encoder handles the image; else uncompressed),
and updates the Image Pixel module to describe what was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from gateway.errors import QuarantineError, ReasonCode

STAGE = "pixels"

# Lossy for sure; JPEG 2000 "Image Compression" and HTJ2K may be either and are not claimed.
LOSSY_METHODS: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
}


class OutputEncoding(str, Enum):
    """How redacted pixels are stored. Both are lossless."""

    EXPLICIT_VR_LITTLE_ENDIAN = "explicit-vr-little-endian"
    RLE_LOSSLESS = "rle-lossless"
    JPEG2000_LOSSLESS = "jpeg2000-lossless"


@dataclass(frozen=True)
class DecodedPixels:
    """All frames as one array: (frames, rows, columns) or (frames, rows, columns, samples)."""

    frames: np.ndarray
    photometric_in: str
    photometric_out: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    transfer_syntax_in: str

    @property
    def count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def samples(self) -> int:
        return 1 if self.frames.ndim == 3 else int(self.frames.shape[3])


def decode(ds: pydicom.Dataset) -> DecodedPixels:
    """Every frame, decoded. Raises ``QuarantineError(PIXEL_DECODE_FAILED)`` on any failure."""
    if "PixelData" not in ds:
        raise QuarantineError(ReasonCode.PIXEL_DECODE_FAILED, "no Pixel Data", stage=STAGE)
    file_meta = getattr(ds, "file_meta", None)
    syntax = UID(str(getattr(file_meta, "TransferSyntaxUID", "") or ExplicitVRLittleEndian))
    try:
        decoder = get_decoder(syntax)
        arrays: list[np.ndarray] = []
        meta: dict[str, Any] = {}
        for array, meta in decoder.iter_array(ds, as_rgb=True):
            arrays.append(array)
    except QuarantineError:
        raise
    except Exception as exc:  # noqa: BLE001 - any codec failure: the type only, never the message
        raise QuarantineError(
            ReasonCode.PIXEL_DECODE_FAILED,
            f"decoder raised {type(exc).__name__}",
            stage=STAGE,
        ) from None
    if not arrays:
        raise QuarantineError(ReasonCode.PIXEL_DECODE_FAILED, "no frames", stage=STAGE)
    frames = np.stack(arrays)
    if frames.dtype.byteorder == ">":
        frames = frames.astype(frames.dtype.newbyteorder("<"))
    return DecodedPixels(
        frames=frames,
        photometric_in=str(ds.get("PhotometricInterpretation", "")),
        photometric_out=str(meta.get("photometric_interpretation", ds.PhotometricInterpretation)),
        bits_allocated=int(meta.get("bits_allocated", ds.BitsAllocated)),
        bits_stored=int(meta.get("bits_stored", ds.get("BitsStored", ds.BitsAllocated))),
        pixel_representation=int(meta.get("pixel_representation", ds.PixelRepresentation)),
        transfer_syntax_in=str(syntax),
    )


def write(
    ds: pydicom.Dataset,
    pixels: DecodedPixels,
    frames: np.ndarray,
    encoding: OutputEncoding = OutputEncoding.EXPLICIT_VR_LITTLE_ENDIAN,
) -> str:
    """Store ``frames`` (same shape and dtype as decoded) in ``ds``; return the syntax written."""
    if frames.shape != pixels.frames.shape or frames.dtype != pixels.frames.dtype:
        raise ValueError("frames must have the decoded shape and dtype")
    _update_pixel_module(ds, pixels)
    if pixels.bits_allocated == 1:
        from pydicom.pixels.utils import pack_bits

        data = pack_bits(frames.astype(np.uint8), pad=False)
    else:
        dtype = np.dtype(
            f"<{'i' if pixels.pixel_representation else 'u'}{pixels.bits_allocated // 8}"
        )
        data = np.ascontiguousarray(frames, dtype=dtype).tobytes()
    if len(data) % 2:
        data += b"\x00"
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if pixels.bits_allocated <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    ds.set_original_encoding(False, True)
    if encoding is OutputEncoding.RLE_LOSSLESS and pixels.bits_allocated in (8, 16):
        plugins = get_encoder(RLELossless).available_plugins
        ds.compress(RLELossless, encoding_plugin="pylibjpeg" if "pylibjpeg" in plugins else "")
    elif (
        encoding is OutputEncoding.JPEG2000_LOSSLESS
        and pixels.bits_allocated in (8, 16)
        and pixels.photometric_out != "PALETTE COLOR"
        and get_encoder(JPEG2000Lossless).is_available
    ):
        ds.compress(JPEG2000Lossless)  # RGB stays RGB: no colour transform is applied
    _record_lossy_history(ds, pixels.transfer_syntax_in)
    return str(ds.file_meta.TransferSyntaxUID)


def _update_pixel_module(ds: pydicom.Dataset, pixels: DecodedPixels) -> None:
    ds.PhotometricInterpretation = pixels.photometric_out
    ds.SamplesPerPixel = pixels.samples
    ds.BitsAllocated = pixels.bits_allocated
    ds.BitsStored = pixels.bits_stored
    ds.HighBit = pixels.bits_stored - 1
    ds.PixelRepresentation = pixels.pixel_representation
    if pixels.samples > 1:
        ds.PlanarConfiguration = 0
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    if "NumberOfFrames" in ds or pixels.count > 1:
        ds.NumberOfFrames = pixels.count
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)


def _record_lossy_history(ds: pydicom.Dataset, syntax_in: str) -> None:
    """Pixels once lossy stay lossy: keep (or add) the claim; never invent one for lossless."""
    method = LOSSY_METHODS.get(syntax_in)
    if method is None:
        return
    ds.LossyImageCompression = "01"
    if "LossyImageCompressionMethod" not in ds:
        ds.LossyImageCompressionMethod = method
