"""Renderings of a decoded frame that make burned-in text legible to OCR.

A frame becomes an 8-bit grey image as displayed (palette applied, MONOCHROME1 inverted, the
full stored range stretched, colour reduced to luminance so that yellow text over blue or red
Doppler stays legible), then polarity is normalised to dark text on a light background, and
small images are upscaled. Greyscale images deeper than 8 bits get a second rendering of their
saturated pixels only: annotations are drawn at the top of the range, often over bright anatomy
where a stretched rendering loses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image

TARGET_LONG_SIDE = 1000
MAX_UPSCALE = 6
UPSCALE_BELOW = 600  # long side, in pixels: a 640x480 screen is read as it is


@dataclass(frozen=True)
class Palette:
    """PALETTE COLOR lookup, reduced to the brightest channel (8-bit) per index."""

    brightness: np.ndarray
    darkest_index: int

    @staticmethod
    def from_dataset(ds: pydicom.Dataset) -> Palette | None:
        if str(ds.get("PhotometricInterpretation", "")) != "PALETTE COLOR":
            return None
        from pydicom.pixels.processing import apply_color_lut

        bits = int(ds.BitsStored)
        indices = np.arange(2**bits, dtype=np.uint16 if bits > 8 else np.uint8)
        rgb = apply_color_lut(indices, ds).astype(np.float64)
        top = rgb.max() or 1.0
        brightness = np.clip(rgb.max(axis=-1) / top * 255.0, 0, 255).astype(np.uint8)
        luminance = rgb @ np.array([0.299, 0.587, 0.114])
        return Palette(brightness=brightness, darkest_index=int(np.argmin(luminance)))


def display_grey(frame: np.ndarray, photometric: str, palette: Palette | None) -> np.ndarray:
    """The frame as an 8-bit grey image, bright where the display is bright."""
    if palette is not None:
        index = np.clip(frame.astype(np.int64), 0, len(palette.brightness) - 1)
        brightness: np.ndarray = palette.brightness[index]
        return brightness
    if frame.ndim == 3:  # luminance: yellow text over blue or red Doppler stays bright
        rgb = frame.astype(np.float32)
        data = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        top = 255.0 if frame.dtype == np.uint8 else float(np.iinfo(frame.dtype).max)
        luminance: np.ndarray = np.clip(data * (255.0 / top), 0, 255).astype(np.uint8)
        return luminance
    data = frame
    if data.dtype == np.uint8:
        grey = data
    else:
        lo = float(data.min())
        hi = float(data.max())
        span = hi - lo or 1.0
        grey = ((data.astype(np.float32) - lo) * (255.0 / span)).astype(np.uint8)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return grey


ANNOTATION_LEVEL = 220  # of 255, in the middle channel: yellow (255, 230, 40) counts, red does not


_STRETCH = np.clip(np.arange(256) * (255.0 / ANNOTATION_LEVEL), 0, 255).astype(np.uint8)


def annotation_channel(frame: np.ndarray) -> np.ndarray:
    """A colour frame (rows, columns, 3) as 8-bit grey, each pixel its middle channel stretched
    so that :data:`ANNOTATION_LEVEL` reaches the top. Annotations are white, yellow or cyan (two
    or three channels bright) and then saturate as white does, while their luminance does not;
    colour Doppler's red and blue (one channel) stay dark instead of joining the glyphs they
    flow under. Pure green text does not count (a known limit)."""
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    middle = np.maximum(np.minimum(r, g), np.minimum(np.maximum(r, g), b))  # elementwise: fast
    if frame.dtype == np.uint8:
        out: np.ndarray = _STRETCH[middle]
        return out
    level = ANNOTATION_LEVEL * float(np.iinfo(frame.dtype).max) / 255.0
    out = np.clip(middle.astype(np.float32) * (255.0 / level), 0, 255).astype(np.uint8)
    return out


class AnnotationFrames:
    """:func:`annotation_channel` of colour frames, made per frame when first asked for (the
    reads need frame 0 and the frames of redacted lines, not all of a cine)."""

    def __init__(self, frames: np.ndarray) -> None:
        self._frames = frames
        self._made: dict[int, np.ndarray] = {}

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._made:
            self._made[index] = annotation_channel(self._frames[index])
        return self._made[index]


SATURATED = 250


def saturated(grey: np.ndarray) -> np.ndarray:
    """Only the brightest pixels (as displayed), bright on black."""
    return np.where(grey >= SATURATED, 255, 0).astype(np.uint8)


DARKEST = 5


def extreme(grey: np.ndarray, light_text: bool) -> np.ndarray:
    """Dark text on white: only the pixels at the text end of the range (the brightest for
    light text, the darkest for dark text). Annotations are drawn there; anatomy and speckle
    under large text are not, and they are what defeats OCR of the rendering as shown."""
    text = grey >= SATURATED if light_text else grey <= DARKEST
    return np.where(text, 0, 255).astype(np.uint8)


def ocr_scale(rows: int, columns: int) -> float:
    """Upscaling that makes the text of a small image (a 128x128 CT) legible."""
    long_side = max(rows, columns)
    if long_side < UPSCALE_BELOW:
        return float(min(MAX_UPSCALE, max(2, round(TARGET_LONG_SIDE / long_side))))
    return 1.0


def dark_on_light(grey: np.ndarray) -> np.ndarray:
    return 255 - grey if float(grey.mean()) < 128.0 else grey


def for_ocr(grey: np.ndarray, scale: float | None = None) -> tuple[Image.Image, float]:
    """Dark text on light background, upscaled when small. Returns the image and its scale."""
    grey = dark_on_light(grey)
    rows, columns = grey.shape
    scale = ocr_scale(rows, columns) if scale is None else scale
    image = Image.fromarray(np.ascontiguousarray(grey))
    if scale != 1.0:
        image = image.resize((int(columns * scale), int(rows * scale)), Image.Resampling.LANCZOS)
    return image, scale
