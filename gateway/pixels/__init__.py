"""Burned-in text in pixels: detect (OCR + known regions), redact, re-encode losslessly, verify.

The DICOM pipeline builds one :class:`PixelStage` per process from the profile's
``dicom.pixels`` settings and calls :meth:`PixelStage.clean` on its own copy of an instance
before header de-identification. The stage never sets BurnedInAnnotation or the method codes:
the header stage does, from the returned :class:`PixelReport`.
"""

from gateway.pixels.model import Box, BoxSource, PixelReport, TextMode
from gateway.pixels.ocr import OcrEngine, TesseractEngine
from gateway.pixels.stage import PixelStage

__all__ = [
    "Box",
    "BoxSource",
    "OcrEngine",
    "PixelReport",
    "PixelStage",
    "TesseractEngine",
    "TextMode",
]
