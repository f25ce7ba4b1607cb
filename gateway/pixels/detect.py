"""Reading text in frames and turning PHI findings into redaction boxes (pixel coordinates)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import ImageOps

from gateway.pixels.frames import plan_reads
from gateway.pixels.fuzzy import DenyIndex
from gateway.pixels.model import Box, BoxSource, Redaction
from gateway.pixels.ocr import OcrEngine, segments
from gateway.pixels.phi import OcrPhiClassifier
from gateway.pixels.render import for_ocr
from gateway.text import PhiContext

BORDER = 12  # white margin around a rendering: tesseract reads text at the edge poorly
PAD_FRACTION = 0.3  # of the text height, around each redacted word


@dataclass(frozen=True)
class Detection:
    redactions: tuple[Redaction, ...]
    entities: tuple[str, ...]
    segments: int
    reads: int


def detect(
    grey: np.ndarray,
    engine: OcrEngine,
    classifier: OcrPhiClassifier,
    context: PhiContext,
    index: DenyIndex,
) -> Detection:
    """OCR the planned reads of ``grey`` (frames, rows, columns) and box what is PHI."""
    _, rows, columns = grey.shape
    redactions: list[Redaction] = []
    entities: set[str] = set()
    found = 0
    reads = plan_reads(grey)
    for read in reads:
        image, scale = for_ocr(read.image)
        image = ImageOps.expand(image, border=BORDER, fill=255)
        words = engine.read(image)
        for finding in classifier.find(segments(words), context, index):
            found += 1
            entities.update(finding.entities)
            for box in finding.boxes:
                height = box.y1 - box.y0
                pad = max(2, int(height * PAD_FRACTION))
                clipped = box.shift(-BORDER, -BORDER).pad(pad, pad).scale(scale).clip(columns, rows)
                if clipped is not None:
                    frames = read.frames_for(clipped.x0, clipped.y0, clipped.x1, clipped.y1)
                    redactions.append(Redaction(clipped, BoxSource.OCR, frames))
    return Detection(tuple(redactions), tuple(sorted(entities)), found, len(reads))


def apply(
    frames: np.ndarray,
    redactions: list[Redaction],
    keep: list[Box],
    fill: int | float,
) -> np.ndarray:
    """A copy of ``frames`` with boxes (and everything outside ``keep``, if any) filled."""
    out = frames.copy()
    count, rows, columns = frames.shape[:3]
    everywhere = np.zeros((rows, columns), dtype=bool)
    if keep:
        inside = np.zeros((rows, columns), dtype=bool)
        for box in keep:
            inside[box.y0 : box.y1, box.x0 : box.x1] = True
        everywhere |= ~inside
    per_frame: dict[int, np.ndarray] = {}
    for redaction in redactions:
        box = redaction.box
        if redaction.frames is None:
            everywhere[box.y0 : box.y1, box.x0 : box.x1] = True
            continue
        for index in redaction.frames:
            mask = per_frame.setdefault(index, np.zeros((rows, columns), dtype=bool))
            mask[box.y0 : box.y1, box.x0 : box.x1] = True
    for index in range(count):
        mask = everywhere | per_frame[index] if index in per_frame else everywhere
        out[index][mask] = fill
    return out
