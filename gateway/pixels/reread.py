"""Verification of redacted lines: read each again other ways, looking for any part of a value.

The detection read and the local re-read (``detect.verify_local``) search for whole tokens at
one scale with one page segmentation. A box that stopped short of the end of a value (OCR read
``DOB 12/0`` and missed the rest, or split it at a separator) leaves ``3/1961`` readable, and
neither finds it. So every redacted line is cropped with room on both sides
(:data:`REACH` text heights), redacted boxes painted as background, and read with each plan of
:data:`REREADS`: other page segmentation modes, the text height normalised to sizes tesseract
reads best (larger than detection for small text, smaller for 60-100 px text), and the text-end
pixels alone. Any word that shows a part of a value (:class:`ValueParts`) becomes a box that
joins it to the redaction of its line, from first to last glyph; the stage then redacts and
verifies again, and quarantines when parts are still read after its last round.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image

from gateway.pixels.detect import BORDER, PAD_FRACTION, Detection
from gateway.pixels.model import Box, BoxSource, Redaction
from gateway.pixels.ocr import OcrEngine, PageSegMode
from gateway.pixels.parts import ValueParts
from gateway.pixels.render import AnnotationFrames, extreme

REACH = 8.0  # text heights on each side of a redacted box: all of ``12/03/1961`` past a label
GAP = 16  # background rows between lines in a mosaic


class Rendering(str, Enum):
    AS_SHOWN = "as-shown"  # polarity normalised to dark text on a light background
    EXTREME = "extreme"  # only the pixels at the text end of the range (saturated annotations)


@dataclass(frozen=True)
class Reread:
    rendering: Rendering
    text_height: int  # pixels the line's text is scaled to
    psm: PageSegMode


REREADS: tuple[Reread, ...] = (
    Reread(Rendering.AS_SHOWN, 32, PageSegMode.SINGLE_LINE),
    Reread(Rendering.AS_SHOWN, 64, PageSegMode.SINGLE_BLOCK),
    Reread(Rendering.EXTREME, 40, PageSegMode.SINGLE_BLOCK),
)


@dataclass(frozen=True)
class Line:
    """A redacted line: the crop to read (pixel coordinates) and the text height in it."""

    frame: int
    region: Box
    text_height: float
    redactions: tuple[Redaction, ...]


def reread_lines(
    grey: np.ndarray,
    redactions: list[Redaction],
    engine: OcrEngine,
    parts: ValueParts,
    plans: tuple[Reread, ...] = REREADS,
    text_end: AnnotationFrames | None = None,
) -> Detection:
    """Re-read the lines of the OCR boxes in ``redactions`` on the redacted ``grey`` frames
    (text-end renderings from ``text_end`` when given: colour frames' annotation channel)."""
    lines = plan_lines(grey.shape, redactions)
    if not lines or not parts:
        return Detection((), (), 0, 0)
    found: dict[Box, Redaction] = {}
    entities: set[str] = set()
    reads = 0
    for plan in plans:
        pieces = [(line, _render(grey, text_end, line, redactions, plan)) for line in lines]
        batches = [[piece] for piece in pieces] if plan.psm is PageSegMode.SINGLE_LINE else [pieces]
        for batch in batches:
            reads += 1
            for line, box, entity in _read(engine, batch, plan, parts):
                widened = _widen(line, box, grey.shape)
                found.setdefault(widened.box, widened)
                entities.add(entity)
    return Detection(tuple(found.values()), tuple(sorted(entities)), len(found), reads)


def annotation_frames(frames: np.ndarray) -> AnnotationFrames | None:
    """For colour frames, the rendering whose extremes are annotation text (middle channel),
    for the text-end reads; for grey and palette frames the display rendering is (``None``)."""
    return AnnotationFrames(frames) if frames.ndim == 4 else None


def plan_lines(shape: tuple[int, ...], redactions: list[Redaction]) -> list[Line]:
    """One line per group of OCR boxes that overlap once reached out (per frame read)."""
    _, rows, columns = shape
    lines: list[Line] = []
    for redaction in redactions:
        if redaction.source is not BoxSource.OCR:
            continue
        height = (redaction.box.y1 - redaction.box.y0) / (1 + 2 * PAD_FRACTION)
        region = redaction.box.pad(int(REACH * height), int(height / 4)).clip(columns, rows)
        if region is None:
            continue
        chosen = sorted(redaction.frames) if redaction.frames is not None else [0]
        for frame in {chosen[0], chosen[-1]}:
            lines.append(Line(frame, region, height, (redaction,)))
    return _merge(lines)


def _merge(lines: list[Line]) -> list[Line]:
    merged = sorted(lines, key=lambda line: (line.frame, line.region))
    changed = True
    while changed:
        changed = False
        out: list[Line] = []
        for line in merged:
            for i, other in enumerate(out):
                if other.frame == line.frame and _overlap(other.region, line.region):
                    out[i] = Line(
                        line.frame,
                        _hull(other.region, line.region),
                        max(other.text_height, line.text_height),
                        other.redactions + line.redactions,
                    )
                    changed = True
                    break
            else:
                out.append(line)
        merged = out
    return merged


def _render(
    grey: np.ndarray,
    text_end: AnnotationFrames | None,
    line: Line,
    redactions: list[Redaction],
    plan: Reread,
) -> tuple[Image.Image, float]:
    """The line's crop as ``plan`` says, boxes already redacted painted as background."""
    frame = grey[line.frame]
    region = line.region
    crop = frame[region.y0 : region.y1, region.x0 : region.x1]
    light_text = float(frame.mean()) < 128.0
    if plan.rendering is Rendering.EXTREME:
        if text_end is not None:
            crop = text_end[line.frame][region.y0 : region.y1, region.x0 : region.x1]
        shown = extreme(crop, light_text)
    else:
        shown = (255 - crop if light_text else crop).astype(np.uint8)
    for redaction in redactions:
        if redaction.frames is not None and line.frame not in redaction.frames:
            continue
        box = redaction.box
        x0, y0 = max(box.x0, region.x0) - region.x0, max(box.y0, region.y0) - region.y0
        x1, y1 = min(box.x1, region.x1) - region.x0, min(box.y1, region.y1) - region.y0
        if x1 > x0 and y1 > y0:
            shown[y0:y1, x0:x1] = 255
    scale = plan.text_height / max(line.text_height, 1.0)
    image = Image.fromarray(np.ascontiguousarray(shown))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS), scale


def _read(
    engine: OcrEngine,
    batch: list[tuple[Line, tuple[Image.Image, float]]],
    plan: Reread,
    parts: ValueParts,
) -> list[tuple[Line, Box, str]]:
    """OCR one image of the batch's lines stacked; words showing a part, in pixel coordinates."""
    width = max(image.width for _, (image, _) in batch) + 2 * BORDER
    height = sum(image.height + GAP for _, (image, _) in batch) - GAP + 2 * BORDER
    mosaic = Image.new("L", (width, height), 255)
    tops: list[int] = []
    y = BORDER
    for _, (image, _) in batch:
        mosaic.paste(image, (BORDER, y))
        tops.append(y)
        y += image.height + GAP
    hits: list[tuple[Line, Box, str]] = []
    for word in engine.read(mosaic, plan.psm):
        entity = parts.found_in(word.text, word.confidence)
        if entity is None:
            continue
        centre = (word.box.y0 + word.box.y1) / 2
        for (line, (image, scale)), top in zip(batch, tops):
            if top - GAP / 2 <= centre < top + image.height + GAP / 2:
                local = word.box.shift(-BORDER, -top).scale(scale)
                hits.append((line, local.shift(line.region.x0, line.region.y0), entity))
                break
    return hits


def _widen(line: Line, box: Box, shape: tuple[int, ...]) -> Redaction:
    """The hit joined to the nearest redaction of its line: first to last glyph, line height."""
    _, rows, columns = shape
    nearest = min(line.redactions, key=lambda r: _gap(r.box, box))
    pad = max(2, int(line.text_height * PAD_FRACTION))
    joined = _hull(nearest.box, box.pad(pad, pad)).clip(columns, rows)
    return Redaction(joined or nearest.box, BoxSource.OCR, nearest.frames)


def _gap(a: Box, b: Box) -> int:
    return max(0, a.x0 - b.x1, b.x0 - a.x1) + max(0, a.y0 - b.y1, b.y0 - a.y1)


def _overlap(a: Box, b: Box) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _hull(a: Box, b: Box) -> Box:
    return Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))
