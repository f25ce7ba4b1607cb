"""Reading text in frames and turning PHI findings into redaction boxes (pixel coordinates)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import ImageOps
from scipy import ndimage

from gateway.pixels.frames import Read, plan_reads
from gateway.pixels.fuzzy import DenyIndex
from gateway.pixels.model import Box, BoxSource, Redaction
from gateway.pixels.ocr import OcrEngine, segments
from gateway.pixels.phi import OcrPhiClassifier
from gateway.pixels.render import (
    AnnotationFrames,
    dark_on_light,
    extreme,
    for_ocr,
    ocr_scale,
    saturated,
)
from gateway.text import PhiContext

BORDER = 12  # white margin around a rendering: tesseract reads text at the edge poorly
PAD_FRACTION = 0.3  # of the text height, around each redacted span of words
# Text 60-100 px high over anatomy defeats OCR of the frame as shown (speckle joins the glyphs);
# its text-end pixels alone, scaled so it is 24-40 px high, read well and cost little.
LARGE_TEXT_SCALE = 0.4
LARGE_TEXT_MIN_SIDE = 400
LARGE_STROKE = 4  # pixels: 60 px DejaVu Sans has 7 px strokes, 18 px bold text 2-3 px


@dataclass(frozen=True)
class Detection:
    redactions: tuple[Redaction, ...]
    entities: tuple[str, ...]
    segments: int
    reads: int

    def __add__(self, other: Detection) -> Detection:
        return Detection(
            self.redactions + other.redactions,
            tuple(sorted({*self.entities, *other.entities})),
            self.segments + other.segments,
            self.reads + other.reads,
        )


def detect(
    grey: np.ndarray,
    engine: OcrEngine,
    classifier: OcrPhiClassifier,
    context: PhiContext,
    index: DenyIndex,
    saturated_too: bool = False,
    text_end: AnnotationFrames | None = None,
) -> Detection:
    """OCR the planned reads of ``grey`` (frames, rows, columns) and box what is PHI; with
    ``saturated_too``, also frame 0's saturated pixels alone. Large text is read in frame 0's
    text-end pixels, taken from ``text_end`` (colour frames: their annotation channel) or
    ``grey``."""
    _, rows, columns = grey.shape
    redactions: list[Redaction] = []
    entities: set[str] = set()
    found = 0
    reads: list[tuple[Read, float | None]] = [(read, None) for read in plan_reads(grey)]
    if saturated_too:
        reads.append((Read(saturated(grey[0])), None))
    if max(rows, columns) >= LARGE_TEXT_MIN_SIDE:
        light_text = float(grey[0].mean()) < 128.0
        source = grey[0] if text_end is None else text_end[0]
        reads.append((Read(large_strokes(extreme(source, light_text))), LARGE_TEXT_SCALE))
    for read, wanted_scale in reads:
        image, scale = for_ocr(read.image, wanted_scale)
        image = ImageOps.expand(image, border=BORDER, fill=255)
        words = engine.read(image)
        for finding in classifier.find(segments(words), context, index):
            found += 1
            entities.update(finding.entities)
            clipped = span_box(finding.boxes, scale, -BORDER).clip(columns, rows)
            if clipped is not None:
                frames = read.frames_for(clipped.x0, clipped.y0, clipped.x1, clipped.y1)
                redactions.append(Redaction(clipped, BoxSource.OCR, frames))
    return Detection(tuple(redactions), tuple(sorted(entities)), found, len(reads))


def large_strokes(text: np.ndarray) -> np.ndarray:
    """Dark-on-white text-end pixels with strokes thinner than :data:`LARGE_STROKE` removed:
    text small enough to lose them is read in the frame as shown, and left in it would cost
    the large-text read time and give it specks to misread."""
    ink = text < 128
    kept = ndimage.binary_opening(ink, structure=np.ones((LARGE_STROKE, LARGE_STROKE), bool))
    return np.where(kept, 0, 255).astype(np.uint8)


def span_box(boxes: tuple[Box, ...], scale: float, offset: int = 0) -> Box:
    """What to redact for a match, in pixels: one box from the first to the last of the words
    it spans (so a value OCR split at ``/ - .`` or a space, or misread inside, is covered
    between its pieces too) and the full height of the line, plus a margin of
    :data:`PAD_FRACTION` of the text height on every side; rounded outwards. The margin
    follows the median word height: one word swollen by a graphic that touches it (a caliper
    line) does not widen the margin of the rest."""
    heights = sorted(b.y1 - b.y0 for b in boxes)
    pad = max(2, math.ceil(heights[(len(heights) - 1) // 2] * PAD_FRACTION))  # lower median
    hull = Box(
        min(b.x0 for b in boxes),
        min(b.y0 for b in boxes),
        max(b.x1 for b in boxes),
        max(b.y1 for b in boxes),
    )
    return hull.shift(offset, offset).pad(pad, pad).scale(scale)


VERIFY_MARGIN = 1.0  # of the box height, around each redacted box, for the local re-read
MOSAIC_GAP = 24


def verify_local(
    grey: np.ndarray,
    redactions: list[Redaction],
    engine: OcrEngine,
    classifier: OcrPhiClassifier,
    context: PhiContext,
    index: DenyIndex,
) -> Detection:
    """OCR again around every redacted box, on the redacted frames.

    Outside these neighbourhoods the pixels are bit-identical to the detection input, which was
    read whole and held no PHI; so re-reading the neighbourhoods (all of them in one mosaic
    image, one OCR call) verifies the output. Boxes that apply to a set of frames are re-read in
    the first and last frame of the set.
    """
    count, rows, columns = grey.shape
    wanted: dict[int, list[Box]] = {}
    for redaction in redactions:
        box = redaction.box
        margin = max(8, int((box.y1 - box.y0) * VERIFY_MARGIN))
        crop = box.pad(2 * margin, margin).clip(columns, rows)
        if crop is None:
            continue
        chosen = sorted(redaction.frames) if redaction.frames is not None else [0]
        for frame in {chosen[0], chosen[-1]}:
            wanted.setdefault(frame, []).append(crop)
    pieces = [(frame, crop) for frame, crops in wanted.items() for crop in _union(crops)]
    if not pieces:
        return Detection((), (), 0, 0)
    scale = ocr_scale(rows, columns)
    width = max(c.x1 - c.x0 for _, c in pieces) + 2 * MOSAIC_GAP
    height = sum(c.y1 - c.y0 + MOSAIC_GAP for _, c in pieces) + MOSAIC_GAP
    mosaic = np.full((height, width), 255, dtype=np.uint8)
    offsets: list[int] = []
    y = MOSAIC_GAP
    for frame, crop in pieces:
        patch = dark_on_light(grey[frame, crop.y0 : crop.y1, crop.x0 : crop.x1])
        mosaic[y : y + patch.shape[0], MOSAIC_GAP : MOSAIC_GAP + patch.shape[1]] = patch
        offsets.append(y)
        y += patch.shape[0] + MOSAIC_GAP
    image, _ = for_ocr(mosaic, scale)
    words = engine.read(image)
    found: list[Redaction] = []
    entities: set[str] = set()
    findings = classifier.find(segments(words), context, index)
    for finding in findings:
        entities.update(finding.entities)
        for box in finding.boxes:  # a segment may span pieces of the mosaic: box by box
            local = span_box((box,), scale)
            centre = (local.y0 + local.y1) // 2
            for (frame, crop), top in zip(pieces, offsets):
                if top - MOSAIC_GAP // 2 <= centre < top + (crop.y1 - crop.y0) + MOSAIC_GAP // 2:
                    moved = local.shift(crop.x0 - MOSAIC_GAP, crop.y0 - top).clip(columns, rows)
                    if moved is not None:
                        frames = _frames_near(moved, frame, redactions) if count > 1 else None
                        found.append(Redaction(moved, BoxSource.OCR, frames))
                    break
    return Detection(tuple(found), tuple(sorted(entities)), len(findings), 1)


def _frames_near(box: Box, frame: int, redactions: list[Redaction]) -> frozenset[int] | None:
    """Text left next to a box is in the frames that box applies to."""
    sets: list[frozenset[int]] = []
    for redaction in redactions:
        near = redaction.box.pad(
            redaction.box.y1 - redaction.box.y0, redaction.box.y1 - redaction.box.y0
        )
        if near.x0 < box.x1 and box.x0 < near.x1 and near.y0 < box.y1 and box.y0 < near.y1:
            if redaction.frames is None:
                return None
            sets.append(redaction.frames)
    return frozenset({frame}).union(*sets)


def _union(boxes: list[Box]) -> list[Box]:
    """Merge overlapping boxes until none overlap."""
    merged = sorted(boxes)
    changed = True
    while changed:
        changed = False
        out: list[Box] = []
        for box in merged:
            for i, other in enumerate(out):
                if (
                    box.x0 < other.x1
                    and other.x0 < box.x1
                    and box.y0 < other.y1
                    and other.y0 < box.y1
                ):
                    out[i] = Box(
                        min(box.x0, other.x0),
                        min(box.y0, other.y0),
                        max(box.x1, other.x1),
                        max(box.y1, other.y1),
                    )
                    changed = True
                    break
            else:
                out.append(box)
        merged = out
    return merged


def apply(
    frames: np.ndarray,
    redactions: list[Redaction],
    keep: list[Box],
    fill: float,
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
