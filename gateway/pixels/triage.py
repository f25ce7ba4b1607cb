"""Text-presence triage: a few milliseconds that decide whether a frame is worth OCR.

Burned-in text is strokes a few pixels wide, much brighter (or darker) than what is right
around them, drawn as glyphs of one height side by side on a line. Anatomy is rarely all of
that at once. The triage, on the display rendering of a frame (``render.display_grey``):

1. **Reduce** frames larger than ``WORK_SIDE`` by block max and block min (bright text survives
   the max, dark text the min), so the cost is bounded whatever the matrix.
2. **Contrast**: pixels that differ from the mean of their ``WINDOW`` x ``WINDOW`` neighbourhood
   by at least ``CONTRAST`` grey levels, brighter and darker separately (for greyscale deeper
   than 8 bits the saturated pixels count as bright, as the OCR path reads them apart).
3. **Glyphs**: connected components of those pixels with a glyph's height, width and fill.
4. **Lines**: chains of glyphs, each the right-hand neighbour of the last (a letter gap or
   less, the same height within ``HEIGHT_RATIO``, the same top or baseline). A chain of at
   least ``MIN_GLYPHS`` glyphs, wider than tall, shaped like letters (not a row of wide blobs)
   is a text line.

A frame with a text line is *text likely* and goes to OCR; a frame without one is not read.
Recall comes first: every threshold errs towards OCR (a false alarm costs one OCR call, a miss
forwards PHI). Limits: a lone short token (two glyphs or fewer, e.g. a laterality marker) is
not a line; text drawn at low contrast (< ``CONTRAST`` levels from its surroundings after the
full-range stretch) is not seen; glyphs taller than ``MAX_GLYPH`` pixels (of the reduced frame)
are not glyphs. Profiles that cannot accept these limits examine every image with OCR
(``examine.policy: all``).

Neither deid nor CTP look at the pixels to decide: both match header signatures
(Manufacturer, model, ImageType, SeriesDescription: deid's ``dicom.deid`` filter, CTP's
DicomPixelAnonymizer scripts), so a device or series that no signature names goes out as it is.
The gateway keeps those signatures (``deid_filters``) and adds this pixel test underneath them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from gateway.pixels.model import Box
from gateway.pixels.render import SATURATED

WORK_SIDE = 1024  # frames with a longer side are reduced by an integer factor to at most this
WINDOW = 31  # neighbourhood of the local mean, in pixels of the (reduced) frame
SPARSE_MEAN_FROM = 256  # frames at least this large get the local mean from every other pixel
CONTRAST = 48  # grey levels from the local mean
MIN_GLYPH = 4  # glyph height range, in pixels of the (reduced) frame
MAX_GLYPH = 48
MAX_GLYPH_WIDTH = 6.0  # x height: touching letters of a small font make one wide component
MIN_FILL = 0.12  # of a glyph's bounding box
MAX_FILL = 0.95
GAP = 0.9  # x the glyph height: the widest gap between letters (and words) of a line
OVERLAP = 0.3  # x the glyph height: neighbours may overlap this much (italics, kerning)
MIN_GLYPHS = 3  # on one line
MAX_PAIRWISE = 1500  # glyph-shaped components compared pairwise; more: text likely
LINE_HEIGHT = 1.8  # a line is at most this many times as tall as its tallest glyph
BASELINE = 0.25  # x the glyph height: letters' bottoms lie this close (descenders apart)
HEIGHT_RATIO = 1.6  # letters of a line are within this factor of the typical height
MAX_LETTER_ASPECT = 2.0  # median width / height of a line's glyphs
LONG_LINE = 5  # glyphs: a line this long needs no letter shapes
MIN_ASPECT = 2.5  # a line is at least this many times as wide as tall
LARGE_TEXT_FACTOR = 2  # the second, coarse pass: glyphs up to 2 x MAX_GLYPH (60-100 px text)
LARGE_TEXT_FROM = 256  # frames at least this large get the coarse pass
EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class TriageResult:
    """Whether a frame likely holds text, and the evidence counted (never the text)."""

    text_likely: bool
    lines: int
    glyphs: int

    def __add__(self, other: TriageResult) -> TriageResult:
        lines = self.lines + other.lines
        return TriageResult(lines > 0, lines, self.glyphs + other.glyphs)


NOTHING = TriageResult(False, 0, 0)


@dataclass(frozen=True)
class TextLine:
    """A text line the triage found: its box in the frame, and whether the text is dark."""

    box: Box
    dark: bool


def work_factor(grey: np.ndarray, coarse: bool = False) -> int:
    """The reduction of a frame: the smallest factor that fits ``WORK_SIDE``; ``coarse``
    doubles it, so that glyphs up to twice ``MAX_GLYPH`` (large burned-in dates) fit too."""
    rows, columns = grey.shape
    factor = -(-max(rows, columns) // WORK_SIDE)
    return int(factor * LARGE_TEXT_FACTOR if coarse else factor)


def reduce(grey: np.ndarray, coarse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(block max, block min) of ``grey`` by ``work_factor``."""
    rows, columns = grey.shape
    factor = work_factor(grey, coarse)
    if factor <= 1:
        return grey, grey
    cut = grey[: rows - rows % factor, : columns - columns % factor]
    high = cut[::factor, ::factor].copy()
    low = high.copy()
    for dy in range(factor):
        for dx in range(factor):
            part = cut[dy::factor, dx::factor]
            np.maximum(high, part, out=high)
            np.minimum(low, part, out=low)
    return high, low


def local_mean(image: np.ndarray) -> np.ndarray:
    """The ``WINDOW`` x ``WINDOW`` mean (int16). From ``SPARSE_MEAN_FROM`` pixels on, computed
    on every other pixel and spread back: a background level needs no full resolution there,
    and this takes a quarter off the triage's cost."""
    rows, columns = image.shape
    if min(rows, columns) < SPARSE_MEAN_FROM:
        dense: np.ndarray = ndimage.uniform_filter(image, WINDOW).astype(np.int16)
        return dense
    sparse = ndimage.uniform_filter(image[::2, ::2], WINDOW // 2 + 1)
    spread = np.repeat(np.repeat(sparse, 2, axis=0), 2, axis=1)[:rows, :columns]
    return spread.astype(np.int16)


def _passes(
    grey: np.ndarray, saturated_too: bool, coarse: bool = False
) -> Iterator[tuple[Callable[[], np.ndarray], bool]]:
    """The strong-contrast masks of a frame, bright strokes first: (mask maker, dark text)."""
    high, low = reduce(grey, coarse)
    mean_high = local_mean(high)
    mean_low = mean_high if low is high else local_mean(low)

    def bright() -> np.ndarray:
        strokes: np.ndarray = high.astype(np.int16) - mean_high >= CONTRAST
        return strokes | (high >= SATURATED) if saturated_too else strokes

    def dark() -> np.ndarray:
        strokes: np.ndarray = mean_low - low.astype(np.int16) >= CONTRAST
        return strokes

    yield bright, False
    yield dark, True


def triage(grey: np.ndarray, saturated_too: bool = False) -> TriageResult:
    """Triage one frame (rows, columns) uint8, bright where the display is bright.

    Bright strokes first, then dark ones; with ``saturated_too`` (greyscale deeper than 8
    bits, as the OCR path) the saturated pixels count as bright strokes: annotations drawn at
    the top of the stored range over bright anatomy, which the full-range stretch flattens.
    """
    result = NOTHING
    for coarse in _scales(grey):
        for mask, _ in _passes(grey, saturated_too, coarse):
            result += _text_lines(mask())
            if result.text_likely:
                return result
    return result


def _scales(grey: np.ndarray) -> tuple[bool, ...]:
    """The passes a frame gets: as reduced, then coarse (large text) when it is big enough."""
    return (False, True) if min(grey.shape) >= LARGE_TEXT_FROM else (False,)


def find_lines(grey: np.ndarray, saturated_too: bool = False) -> list[TextLine]:
    """Every text line of one frame, bright and dark, in the frame's pixel coordinates (for
    reading each line alone; costs about two triages)."""
    found: list[TextLine] = []
    for coarse in _scales(grey):
        factor = work_factor(grey, coarse)
        for mask, dark in _passes(grey, saturated_too, coarse):
            boxes = _glyph_boxes(mask())
            if MIN_GLYPHS <= len(boxes) <= MAX_PAIRWISE:
                for x0, y0, x1, y1, _ in line_boxes(boxes):
                    box = Box(x0 * factor, y0 * factor, x1 * factor, y1 * factor)
                    found.append(TextLine(box, dark))
    return found


def triage_frames(grey: np.ndarray, saturated_too: bool = False) -> TriageResult:
    """Triage every frame of (frames, rows, columns); text likely if it is in any frame."""
    result = NOTHING
    for frame in grey:
        result += triage(frame, saturated_too)
        if result.text_likely:
            break
    return result


def _text_lines(mask: np.ndarray) -> TriageResult:
    """Text lines among the strong-contrast pixels ``mask``, and the glyphs counted."""
    boxes = _glyph_boxes(mask)
    found = len(boxes)
    if found < MIN_GLYPHS:
        return TriageResult(False, 0, found)
    if found > MAX_PAIRWISE:
        return TriageResult(True, 1, found)  # too many letter-like shapes to tell: OCR decides
    lines = len(line_boxes(boxes))
    return TriageResult(lines > 0, lines, found)


def _glyph_boxes(mask: np.ndarray) -> np.ndarray:
    """(y0, y1, x0, x1) of the connected components of ``mask`` shaped like glyphs."""
    labels, count = ndimage.label(mask, EIGHT)
    if count < MIN_GLYPHS:
        return np.zeros((0, 4), dtype=np.int32)
    objects = ndimage.find_objects(labels)
    bounds = np.array(
        [(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in objects], dtype=np.int32
    )
    heights = bounds[:, 1] - bounds[:, 0]
    widths = bounds[:, 3] - bounds[:, 2]
    areas = np.bincount(labels[mask], minlength=count + 1)[1:]
    fill = areas / np.maximum(heights * widths, 1)
    glyph = (
        (heights >= MIN_GLYPH)
        & (heights <= MAX_GLYPH)
        & (widths <= np.maximum(heights * MAX_GLYPH_WIDTH, 3))
        & (fill >= MIN_FILL)
        & (fill <= MAX_FILL)
    )
    glyphs: np.ndarray = bounds[glyph]
    return glyphs


def line_boxes(boxes: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """(x0, y0, x1, y1, glyphs) of the text lines among glyph boxes (y0, y1, x0, x1): chains
    of right-hand neighbours that share a height and a top or a baseline, each a letter gap
    or less from the last, wider than tall, shaped like letters."""
    y0, y1, x0, x1 = (boxes[:, i].astype(np.float32) for i in range(4))
    h = y1 - y0
    ratio = h[None, :] / h[:, None]
    gap = x0[None, :] - x1[:, None]  # from the right edge of i to the left edge of j
    tolerance = np.maximum(2.0, BASELINE * h)[:, None]
    neighbour = (
        (gap >= -OVERLAP * h[:, None])
        & (gap <= GAP * h[:, None])
        & (x0[None, :] > x0[:, None])
        & (ratio >= 1 / HEIGHT_RATIO)
        & (ratio <= HEIGHT_RATIO)
        & (
            (np.abs(y1[None, :] - y1[:, None]) <= tolerance)  # one baseline
            | (np.abs(y0[None, :] - y0[:, None]) <= tolerance)  # or one top (a merged descender)
        )
    )
    if not neighbour.any():
        return []
    count, line = connected_components(csr_matrix(neighbour), directed=False)
    members = np.bincount(line, minlength=count)
    found: list[tuple[int, int, int, int, int]] = []
    for index in np.nonzero(members >= MIN_GLYPHS)[0]:
        mine = line == index
        height = float(y1[mine].max() - y0[mine].min())
        width = float(x1[mine].max() - x0[mine].min())
        if height > LINE_HEIGHT * float(h[mine].max()) or width < MIN_ASPECT * height:
            continue
        if _letter_shaped(x1[mine] - x0[mine], h[mine]):
            found.append(
                (
                    int(x0[mine].min()),
                    int(y0[mine].min()),
                    int(x1[mine].max()),
                    int(y1[mine].max()),
                    int(mine.sum()),
                )
            )
    return found


def _letter_shaped(widths: np.ndarray, heights: np.ndarray) -> bool:
    """Letters are about as wide as tall; a short row of wide blobs (pockets in bone, a
    vessel's segments) is not a word. Long rows pass: small letters touch and merge."""
    return len(widths) >= LONG_LINE or float(np.median(widths / heights)) <= MAX_LETTER_ASPECT
