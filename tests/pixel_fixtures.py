"""Pixel fixtures: real sample images with names, MRNs and dates burned in, across transfer
syntaxes, photometric interpretations and multi-frame, plus the real ultrasound screens of the
``deid-data`` package (which already carry burned-in patient text).

Each case says which burned tokens are PHI (must not be read after cleaning) and which are
technical (must survive in sensitive-only mode). Everything is built in memory (or in a temp
directory for python-gdcm transcoding) from files shipped by pydicom / deid-data.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.pixels import convert_color_space, get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from gateway.pixels.model import Word
from gateway.text import PhiContext

NAME = "DOE^JOHN"
MRN = "48213377"
DOB = "03/14/1962"
ACCESSION = "77120934"
FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


@dataclass(frozen=True)
class PixelCase:
    name: str
    dataset: pydicom.Dataset
    context: PhiContext
    phi_tokens: tuple[str, ...]
    technical_tokens: tuple[str, ...] = ()
    frames_with: dict[str, tuple[int, ...]] = field(default_factory=dict)
    phi_pixels: np.ndarray | None = None  # (frames, rows, columns): glyphs of burned PHI

    def fresh(self) -> pydicom.Dataset:
        """A deep copy: the stage mutates what it cleans."""
        import copy

        return copy.deepcopy(self.dataset)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_PATHS:
        if os.path.exists(path):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def text_mask(rows: int, columns: int, lines: list[tuple[int, int, str, int]]) -> np.ndarray:
    """Boolean mask of the glyphs of ``lines`` = [(x, y, text, size)]."""
    image = Image.new("L", (columns, rows), 0)
    draw = ImageDraw.Draw(image)
    for x, y, text, size in lines:
        draw.text((x, y), text, fill=255, font=font(size))
    return np.asarray(image) > 127


def burn(
    frames: np.ndarray, mask: np.ndarray, value: object, which: list[int] | None = None
) -> np.ndarray:
    out = frames.copy()
    for index in which if which is not None else range(out.shape[0]):
        out[index][mask] = value
    return out


def decoded(ds: pydicom.Dataset) -> np.ndarray:
    """All frames as (frames, rows, columns[, samples]), as the stage decodes them."""
    arrays = [a for a, _ in get_decoder(ds.file_meta.TransferSyntaxUID).iter_array(ds, as_rgb=True)]
    return np.stack(arrays)


def store_native(
    ds: pydicom.Dataset, frames: np.ndarray, photometric: str | None = None, planar: int = 0
) -> None:
    """Write (frames, rows, columns[, samples]) as Explicit VR LE (``planar=1``: the caller
    passes each frame already as (samples, rows, columns))."""
    if photometric is not None:
        ds.PhotometricInterpretation = photometric
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        ds.PlanarConfiguration = planar
    if frames.dtype.byteorder == ">":
        frames = frames.astype(frames.dtype.newbyteorder("<"))
    data = frames.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
    ds.set_original_encoding(False, True)
    if frames.shape[0] > 1:
        ds.NumberOfFrames = frames.shape[0]


def transcode_gdcm(ds: pydicom.Dataset, syntax: str) -> pydicom.Dataset:
    """JPEG baseline / lossless / JPEG-LS through python-gdcm (pydicom has no such encoders)."""
    import gdcm

    wanted = {
        "jpeg-baseline": gdcm.TransferSyntax.JPEGBaselineProcess1,
        "jpeg-lossless": gdcm.TransferSyntax.JPEGLosslessProcess14_1,
        "jpeg-ls": gdcm.TransferSyntax.JPEGLSLossless,
    }[syntax]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.dcm"), Path(tmp, "out.dcm")
        ds.save_as(src, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(wanted))
        change.SetInput(reader.GetImage())
        assert change.Change()
        image = change.GetOutput()
        if str(ds.PhotometricInterpretation) == "YBR_FULL" and syntax == "jpeg-baseline":
            image.SetPhotometricInterpretation(
                gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.YBR_FULL_422)
            )
        writer = gdcm.ImageWriter()
        writer.SetFile(reader.GetFile())
        writer.SetImage(image)
        writer.SetFileName(str(dst))
        assert writer.Write()
        return pydicom.dcmread(dst)


def context_for(ds: pydicom.Dataset, *extra_ids: str) -> PhiContext:
    """What the pipeline builds from the header (names, ids, dates, institution)."""
    context = PhiContext()
    for keyword in ("PatientName", "ReferringPhysicianName", "PerformingPhysicianName"):
        if ds.get(keyword):
            context.add_name(str(ds.get(keyword)))
    for keyword in ("PatientID", "AccessionNumber"):
        if ds.get(keyword):
            context.add_identifier(str(ds.get(keyword)))
    for identifier in extra_ids:
        context.add_identifier(identifier)
    for keyword in ("PatientBirthDate", "StudyDate"):
        value = str(ds.get(keyword, "") or "")
        if len(value) == 8 and value.isdigit():
            context.add_date(dt.date(int(value[:4]), int(value[4:6]), int(value[6:])))
    if ds.get("InstitutionName"):
        context.add_other(str(ds.InstitutionName))
    return context


def _patient(ds: pydicom.Dataset) -> None:
    ds.PatientName = NAME
    ds.PatientID = MRN
    ds.PatientBirthDate = "19620314"
    ds.AccessionNumber = ACCESSION


def _sample(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


def _deid_data(relative: str) -> pydicom.Dataset:
    import deid_data

    return pydicom.dcmread(Path(deid_data.__file__).parent / "data" / relative)


PHI = (NAME, MRN, DOB)


def _phi_lines(x: int, y: int, size: int, step: int) -> list[tuple[int, int, str, int]]:
    return [
        (x, y, NAME, size),
        (x, y + step, f"MRN {MRN}", size),
        (x, y + 2 * step, f"DOB {DOB}", size),
    ]


# ---------------------------------------------------------------- cases


def us_grey_real() -> PixelCase:
    ds = _deid_data("ultrasounds/GREYSCALE_IMAGE.dcm")
    return PixelCase(
        "us-grey-real",
        ds,
        context_for(ds),
        phi_tokens=("PATIENTFI", "00079241539", "08/29/1951", "03/02/2017"),
        technical_tokens=("L12-5", "36Hz", "4.0cm"),
    )


def us_rgb_real(syntax: str = "native") -> PixelCase:
    ds = _deid_data("ultrasounds/RGB_IMAGE.dcm")
    if syntax == "j2k":
        ds.compress(JPEG2000Lossless)
    elif syntax == "rle":
        ds.compress(RLELossless, encoding_plugin="pydicom")
    return PixelCase(
        f"us-rgb-real-{syntax}",
        ds,
        context_for(ds),
        phi_tokens=("ZZZDOWNTIME", "00047431395", "4/14/2020", "120907058"),
        technical_tokens=("16cm", "19fps", "General"),
    )


def ct_int16(syntax: str = "rle", monochrome1: bool = False) -> PixelCase:
    """CT_small: 128x128 signed 16-bit; text at the top of the stored range."""
    ds = _sample("CT_small.dcm")
    _patient(ds)
    frames = decoded(ds)
    mask = text_mask(128, 128, [(2, 2, "DOE JOHN", 12), (2, 16, MRN, 12), (2, 100, DOB, 11)])
    frames = burn(frames, mask, np.int16(frames.max()))
    glyphs = mask[None]
    if monochrome1:
        frames = (-frames).astype(np.int16)
        ds.PhotometricInterpretation = "MONOCHROME1"
        syntax = "native"
    store_native(ds, frames)
    if syntax == "rle":
        ds.compress(RLELossless, encoding_plugin="pydicom")
    suffix = "mono1" if monochrome1 else syntax
    return PixelCase(
        f"ct-int16-{suffix}", ds, context_for(ds), phi_tokens=("DOE", MRN, DOB), phi_pixels=glyphs
    )


def us_rgb_burned(variant: str) -> PixelCase:
    """US1_UNCR (640x480 RGB ultrasound) with PHI and technical labels in yellow."""
    ds = _sample("US1_UNCR.dcm")
    _patient(ds)
    frames = decoded(ds)
    ds.InstitutionName = "BAPTIST MED CTR"  # already burned in at the top left
    phi = _phi_lines(400, 340, 18, 24)
    lines = phi + [(20, 440, "16cm", 18), (520, 440, "TIS 0.5", 18)]
    frames = burn(frames, text_mask(480, 640, lines), np.array([255, 230, 40], np.uint8))
    glyphs = text_mask(480, 640, phi)[None]
    if variant == "ybr-full":
        store_native(ds, convert_color_space(frames[0], "RGB", "YBR_FULL")[None], "YBR_FULL")
    elif variant == "ybr-full-422-jpeg":
        store_native(ds, convert_color_space(frames[0], "RGB", "YBR_FULL")[None], "YBR_FULL")
        ds = transcode_gdcm(ds, "jpeg-baseline")
    elif variant == "planar1":
        store_native(ds, np.ascontiguousarray(frames[0].transpose(2, 0, 1))[None], planar=1)
    elif variant == "j2k-ybr-rct":
        store_native(ds, frames[0][None])
        ds.PhotometricInterpretation = "YBR_RCT"
        ds.compress(JPEG2000Lossless, frames[0], photometric_interpretation="YBR_RCT")
    elif variant in ("jpeg-lossless", "jpeg-ls"):
        store_native(ds, frames[0][None])
        ds = transcode_gdcm(ds, variant)
    else:
        store_native(ds, frames[0][None])
    return PixelCase(
        f"us-rgb-{variant}",
        ds,
        context_for(ds),
        phi_tokens=("DOE", MRN, DOB, "BAPTIST"),
        technical_tokens=("16cm", "TIS"),
        phi_pixels=glyphs,
    )


def us_palette() -> PixelCase:
    """OBXXXX1A: 800x600 PALETTE COLOR ultrasound; text in the brightest palette entry."""
    ds = _sample("OBXXXX1A.dcm")
    _patient(ds)
    frames = decoded(ds)
    from pydicom.pixels import apply_color_lut

    lut = apply_color_lut(np.arange(256, dtype=np.uint8), ds).astype(np.int64).sum(axis=-1)
    mask = text_mask(600, 800, _phi_lines(560, 380, 18, 24) + [(40, 560, "16cm", 18)])
    store_native(ds, burn(frames, mask, np.uint8(np.argmax(lut))))
    return PixelCase(
        "us-palette",
        ds,
        context_for(ds),
        phi_tokens=("DOE", MRN, DOB),
        technical_tokens=("16cm",),
        phi_pixels=text_mask(600, 800, _phi_lines(560, 380, 18, 24))[None],
    )


def us_mono8_jpeg_lossless() -> PixelCase:
    """JPGLosslessP14SV1_1s_1f_8b: a real 1024x768 8-bit ultrasound, JPEG lossless."""
    ds = _sample("JPGLosslessP14SV1_1s_1f_8b.dcm")
    _patient(ds)
    frames = decoded(ds)
    mask = text_mask(768, 1024, _phi_lines(700, 700 - 60, 18, 22) + [(20, 740, "TIS 0.5", 18)])
    store_native(ds, burn(frames, mask, np.uint8(255)))
    return PixelCase(
        "us-mono8-jpeg-lossless",
        transcode_gdcm(ds, "jpeg-lossless"),
        context_for(ds),
        phi_tokens=("DOE", MRN, DOB),
        technical_tokens=("TIS",),
        phi_pixels=text_mask(768, 1024, _phi_lines(700, 700 - 60, 18, 22))[None],
    )


def mr_uint16_j2k() -> PixelCase:
    """MR2_J2KR: 1024x1024 unsigned 16-bit MR, JPEG 2000 lossless."""
    ds = _sample("MR2_J2KR.dcm")
    _patient(ds)
    frames = decoded(ds)
    mask = text_mask(1024, 1024, _phi_lines(20, 20, 26, 32))
    store_native(ds, burn(frames, mask, frames.max()))
    ds.compress(JPEG2000Lossless)
    return PixelCase(
        "mr-uint16-j2k", ds, context_for(ds), phi_tokens=("DOE", MRN, DOB), phi_pixels=mask[None]
    )


def ct_screenshot_dark_text() -> PixelCase:
    """deid-data's ctbrain1 (a YBR_FULL_422 JPEG screenshot, white background), decoded to RGB
    and its own patient's name and ID burned in black: dark text on a light background."""
    ds = _deid_data("humans/ctbrain1.dcm")
    frames = decoded(ds)
    mask = text_mask(456, 510, [(10, 380, "SIMPSON HOMER", 20), (10, 410, "00007041776", 20)])
    store_native(ds, burn(frames, mask, np.array([0, 0, 0], np.uint8)), "RGB")
    return PixelCase(
        "ct-screenshot-dark-text",
        ds,
        context_for(ds),
        phi_tokens=("SIMPSON", "00007041776"),
        phi_pixels=mask[None],
    )


def cine(frames_with_other: tuple[int, ...] = (12, 13, 14, 15, 16, 17)) -> PixelCase:
    """deid-data's real 30-frame RGB echo cine: the name burned in every frame, and in some
    frames only an accession number burned over the moving anatomy."""
    ds = _deid_data("ultrasounds/ultrasound-multiframe.dcm")
    _patient(ds)
    frames = decoded(ds)
    rows, columns = frames.shape[1:3]
    static = text_mask(rows, columns, [(300, 4, f"{NAME}  {MRN}", 16)])
    frames = burn(frames, static, np.array([255, 255, 255], np.uint8))
    other = text_mask(rows, columns, [(300, 330, f"ACC {ACCESSION}", 18)])
    frames = burn(frames, other, np.array([255, 255, 0], np.uint8), list(frames_with_other))
    store_native(ds, frames)
    glyphs = np.repeat(static[None], frames.shape[0], axis=0)
    glyphs[list(frames_with_other)] |= other
    return PixelCase(
        "cine-30",
        ds,
        context_for(ds),
        phi_tokens=("DOE", MRN, ACCESSION),
        technical_tokens=("bpm", "HGen"),
        frames_with={ACCESSION: frames_with_other},
        phi_pixels=glyphs,
    )


BUILDERS: dict[str, Callable[[], PixelCase]] = {
    "us-grey-real": us_grey_real,
    "us-rgb-real-native": us_rgb_real,
    "us-rgb-real-j2k": functools.partial(us_rgb_real, "j2k"),
    "us-rgb-real-rle": functools.partial(us_rgb_real, "rle"),
    "ct-int16-rle": ct_int16,
    "ct-int16-mono1": functools.partial(ct_int16, monochrome1=True),
    "us-rgb-native": functools.partial(us_rgb_burned, "native"),
    "us-rgb-planar1": functools.partial(us_rgb_burned, "planar1"),
    "us-rgb-ybr-full": functools.partial(us_rgb_burned, "ybr-full"),
    "us-rgb-ybr-full-422-jpeg": functools.partial(us_rgb_burned, "ybr-full-422-jpeg"),
    "us-rgb-jpeg-ls": functools.partial(us_rgb_burned, "jpeg-ls"),
    "us-rgb-j2k-ybr-rct": functools.partial(us_rgb_burned, "j2k-ybr-rct"),
    "us-palette": us_palette,
    "us-mono8-jpeg-lossless": us_mono8_jpeg_lossless,
    "mr-uint16-j2k": mr_uint16_j2k,
    "ct-screenshot-dark-text": ct_screenshot_dark_text,
    "cine-30": cine,
}


@functools.cache
def build(name: str) -> PixelCase:
    return BUILDERS[name]()


# ---------------------------------------------------------------- reading back


def read_located(ds: pydicom.Dataset, frames: list[int] | None = None) -> list[tuple[int, Word]]:
    """OCR the whole of the given frames: (frame, word with its box in pixel coordinates)."""
    from gateway.pixels.ocr import TesseractEngine
    from gateway.pixels.render import Palette, display_grey, for_ocr

    pixels = decoded(ds)
    palette = Palette.from_dataset(ds)
    engine = TesseractEngine()
    found: list[tuple[int, Word]] = []
    for index in frames if frames is not None else [0]:
        image, scale = for_ocr(
            display_grey(pixels[index], str(ds.PhotometricInterpretation), palette)
        )
        found.extend(
            (index, Word(w.text, w.box.scale(scale), w.confidence)) for w in engine.read(image)
        )
    return found


def read_words(ds: pydicom.Dataset, frames: list[int] | None = None) -> list[str]:
    return [w.text for _, w in read_located(ds, frames)]


def phi_pixels_covered(case: PixelCase, changed: np.ndarray) -> float:
    """Fraction of burned PHI glyph pixels that were redacted: changed, or inside a changed
    area (dark text under a black box keeps its value but is hidden)."""
    from scipy import ndimage

    assert case.phi_pixels is not None
    hidden = np.stack([ndimage.binary_dilation(c, iterations=3) for c in changed])
    return float(hidden[case.phi_pixels].mean())


def token_boxes(token: str, located: list[tuple[int, Word]]) -> list[tuple[int, Word]]:
    return [(f, w) for f, w in located if token_read(token, [w.text])]


def token_read(token: str, words: list[str]) -> bool:
    """Whether OCR read ``token`` (collapsed comparison; short tokens must be a word's start)."""
    from gateway.pixels.fuzzy import collapse

    wanted = collapse(token)
    text = collapse("".join(words))
    if len(wanted) >= 5:
        return wanted in text
    return any(collapse(w).startswith(wanted) for w in words)


def frames_to_read(case: PixelCase) -> list[int]:
    extra = sorted({f for frames in case.frames_with.values() for f in frames})
    return [0, *extra[:1], *extra[-1:]] if extra else [0]
