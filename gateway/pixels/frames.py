"""What to read in a multi-frame instance, so that text is read once per distinct content.

Frame 0 is read whole. Text that sits still is identical in every frame, so it is read there
once and redacted in every frame. Pixels that never change (outside the *moving region*: every
pixel that changes at all, closed and hole-filled, i.e. the ultrasound sector or the anatomy)
cannot hide new text. Inside the moving region, a frame's *candidate* pixels are those that
differ from frame 0, are still (unchanged since the previous frame or until the next), bright,
and clustered densely like glyphs: this is how an annotation over moving anatomy, or a frame
whose burned-in text differs, looks. The neighbourhoods of all frames' candidates are put
together into one composite image (brightest value wins) that is read once; a box found there is
redacted in the frames whose candidates cover a good part of it.

Limits: text shown in a single frame only (not still) is not a candidate; text drawn darker
than the anatomy under it is not a candidate; candidates of different frames at the same place
overlap in the composite (the verification pass re-reads the redacted frames the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CHANGE_THRESHOLD = 24  # grey levels; lossy cine noise stays below
STILL_THRESHOLD = 2  # a pixel that kept its value since the previous frame
BRIGHT = 140  # annotations over anatomy are drawn bright (white, yellow, cyan, green)
REGION_CLOSING = 6
DENSITY_WINDOW = 7
DENSITY = 0.25
NEIGHBOURHOOD = 4
MIN_CANDIDATE_PIXELS = 6
SUPPORT_FRACTION = 0.3  # of a box: a frame whose candidates cover this much showed the text


@dataclass(frozen=True, eq=False)
class Read:
    """An image to OCR (grey, rows x columns of the frame). Findings apply to the frames in
    ``support`` where it covers the box (``None``: every frame)."""

    image: np.ndarray
    support: np.ndarray | None = None  # (frames, rows, columns) bool

    def frames_for(self, x0: int, y0: int, x1: int, y1: int) -> frozenset[int] | None:
        if self.support is None:
            return None
        window = self.support[:, y0:y1, x0:x1].reshape(self.support.shape[0], -1)
        if window.shape[1] == 0:
            return frozenset()
        covered = window.mean(axis=1) >= SUPPORT_FRACTION
        if not covered.any():  # read in the composite, yet no frame's candidates cover it
            covered = window.any(axis=1)
        return frozenset(int(i) for i in np.nonzero(covered)[0])


def plan_reads(grey: np.ndarray) -> list[Read]:
    """``grey``: (frames, rows, columns) uint8 display renderings."""
    count = grey.shape[0]
    reads = [Read(grey[0])]
    if count == 1:
        return reads
    signed = grey.astype(np.int16)
    steps = np.abs(np.diff(signed, axis=0))
    moving = (steps > CHANGE_THRESHOLD).any(axis=0)
    if not moving.any():
        return reads
    size = 2 * REGION_CLOSING + 1
    closed = ndimage.minimum_filter(ndimage.maximum_filter(moving.view(np.uint8), size), size)
    region = ndimage.binary_fill_holes(closed.astype(bool))
    still = steps <= STILL_THRESHOLD
    support = np.zeros(grey.shape, dtype=bool)
    composite = np.zeros(grey.shape[1:], dtype=np.uint8)
    for index in range(1, count):
        new = np.abs(signed[index] - signed[0]) > CHANGE_THRESHOLD
        stable = still[index - 1] | (still[index] if index < count - 1 else False)
        candidate = new & region & stable & (grey[index] >= BRIGHT)
        if int(candidate.sum()) < MIN_CANDIDATE_PIXELS:
            continue
        candidate &= ndimage.uniform_filter(candidate.astype(np.float32), DENSITY_WINDOW) > DENSITY
        if int(candidate.sum()) < MIN_CANDIDATE_PIXELS:
            continue
        near = ndimage.binary_dilation(candidate, iterations=NEIGHBOURHOOD)
        support[index] = near
        np.maximum(composite, np.where(near, grey[index], 0).astype(np.uint8), out=composite)
    if support.any():
        reads.append(Read(composite, support))
    return reads
