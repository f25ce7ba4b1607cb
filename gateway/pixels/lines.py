"""Reading the triage's text lines one by one, where reading the whole frame fails.

OCR of a whole frame normalises polarity and contrast for the frame: dark text over mid-grey
anatomy, or faint grey text on a small matrix, is then lost (measured: 0 % of such glyphs
redacted). The triage knows where each text line is and whether its text is dark; each line
is cut out with a margin, stretched to its own contrast, made dark on light, upscaled to a
legible height, and all lines are read together in one mosaic (one OCR call). What is PHI is
boxed in frame coordinates, with the rest of the triage line it sits on (the part of a name OCR
could not read goes with the part it could), for every frame (text found in one frame is
redacted in all: an over-redaction at worst).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from gateway.pixels.detect import PAD_FRACTION, Detection, _union
from gateway.pixels.fuzzy import DenyIndex
from gateway.pixels.model import Box, BoxSource, Redaction
from gateway.pixels.ocr import OcrEngine, segments
from gateway.pixels.phi import OcrPhiClassifier
from gateway.pixels.triage import TextLine
from gateway.text import PhiContext

MARGIN_X = 1.0  # x the line height, left and right of a line
MARGIN_Y = 0.6  # x the line height, above and below
LEGIBLE = 32  # pixels: lines are upscaled to about this height
MAX_SCALE = 6
GAP = 24  # white rows between the lines of the mosaic
STRETCH = (2.0, 98.0)  # percentiles of a crop mapped to black and white


def read_lines(
    grey: np.ndarray,
    lines: list[tuple[int, TextLine]],
    engine: OcrEngine,
    classifier: OcrPhiClassifier,
    context: PhiContext,
    index: DenyIndex,
) -> Detection:
    """OCR the (frame, line) crops of ``grey`` (frames, rows, columns) in one mosaic."""
    _, rows, columns = grey.shape
    pieces: list[tuple[int, Box, bool]] = []
    for dark in (False, True):
        crops: dict[int, list[Box]] = {}
        for frame, line in lines:
            if line.dark is dark:
                height = line.box.y1 - line.box.y0
                crop = line.box.pad(int(MARGIN_X * height) + 2, int(MARGIN_Y * height) + 2)
                clipped = crop.clip(columns, rows)
                if clipped is not None:
                    crops.setdefault(frame, []).append(clipped)
        pieces.extend((f, c, dark) for f, boxes in crops.items() for c in _union(boxes))
    if not pieces:
        return Detection((), (), 0, 0)
    heights = [line.box.y1 - line.box.y0 for _, line in lines]
    scale = float(min(MAX_SCALE, max(1, round(LEGIBLE / max(1.0, float(np.median(heights)))))))
    width = max(c.x1 - c.x0 for _, c, _ in pieces) + 2 * GAP
    height = sum(c.y1 - c.y0 + GAP for _, c, _ in pieces) + GAP
    mosaic = np.full((height, width), 255, dtype=np.uint8)
    offsets: list[int] = []
    y = GAP
    for frame, crop, dark in pieces:
        patch = _legible(grey[frame, crop.y0 : crop.y1, crop.x0 : crop.x1], dark)
        mosaic[y : y + patch.shape[0], GAP : GAP + patch.shape[1]] = patch
        offsets.append(y)
        y += patch.shape[0] + GAP
    image = Image.fromarray(mosaic)
    if scale != 1.0:
        image = image.resize((int(width * scale), int(height * scale)), Image.Resampling.LANCZOS)
    words = engine.read(image)  # the mosaic's gaps are its white border
    found: list[Redaction] = []
    entities: set[str] = set()
    findings = classifier.find(segments(words), context, index)
    for finding in findings:
        entities.update(finding.entities)
        for box in finding.boxes:
            pad = max(2, int((box.y1 - box.y0) * PAD_FRACTION))
            local = box.pad(pad, pad).scale(scale)
            centre = (local.y0 + local.y1) // 2
            for (_, crop, _), top in zip(pieces, offsets):
                if top - GAP // 2 <= centre < top + (crop.y1 - crop.y0) + GAP // 2:
                    moved = _within(local.shift(crop.x0 - GAP, crop.y0 - top), crop)
                    if moved is not None:  # the lines it lies on, else what OCR boxed
                        on_lines = _lines_under(moved, crop, lines, columns, rows)
                        found.extend(on_lines or [Redaction(moved, BoxSource.OCR)])
                    break
    return Detection(tuple(found), tuple(sorted(entities)), len(findings), 1)


def _within(box: Box, crop: Box) -> Box | None:
    clipped = Box(
        max(box.x0, crop.x0), max(box.y0, crop.y0), min(box.x1, crop.x1), min(box.y1, crop.y1)
    )
    return clipped if clipped.area > 0 else None


def _lines_under(
    box: Box, crop: Box, lines: list[tuple[int, TextLine]], columns: int, rows: int
) -> list[Redaction]:
    """The whole of each triage line the PHI was read on: the rest of a name OCR could not
    read (``J0HN`` beside ``DOE``) goes with the part it could, and a word OCR boxed across two
    lines of the crop is held to the lines."""
    out: list[Redaction] = []
    for _, line in lines:
        b = line.box
        inside = crop.x0 <= b.x0 and b.x1 <= crop.x1 and crop.y0 <= b.y0 and b.y1 <= crop.y1
        if inside and b.y0 < box.y1 and box.y0 < b.y1:
            pad = max(2, int((b.y1 - b.y0) * PAD_FRACTION))
            padded = b.pad(pad, pad).clip(columns, rows)
            if padded is not None:
                out.append(Redaction(padded, BoxSource.OCR))
    return out


def _legible(patch: np.ndarray, dark: bool) -> np.ndarray:
    """The crop stretched to its own contrast, dark text on a light background."""
    lo, hi = np.percentile(patch, STRETCH)
    stretched = np.clip((patch.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255)
    out: np.ndarray = stretched.astype(np.uint8)
    return out if dark else 255 - out
