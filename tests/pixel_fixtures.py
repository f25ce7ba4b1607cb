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

from gateway.pixels.model import Box, Word
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
class Glyph:
    """One drawn character of a PHI value and its box (pixels, half-open), from PIL."""

    value: str
    char: str
    box: Box


@dataclass(frozen=True)
class PixelCase:
    name: str
    dataset: pydicom.Dataset
    context: PhiContext
    phi_tokens: tuple[str, ...]
    technical_tokens: tuple[str, ...] = ()
    frames_with: dict[str, tuple[int, ...]] = field(default_factory=dict)
    phi_pixels: np.ndarray | None = None  # (frames, rows, columns): glyphs of burned PHI
    glyphs: tuple[Glyph, ...] = ()  # every glyph of every burned PHI value, with its box
    phi_parts: tuple[str, ...] = ()  # date components, name tokens, IDs (digit runs of 3)

    def fresh(self) -> pydicom.Dataset:
        """A deep copy: the stage mutates what it cleans."""
        import copy

        return copy.deepcopy(self.dataset)


CONDENSED = "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf"


def font(size: int, path: str | None = None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for candidate in (path, *FONT_PATHS) if path else FONT_PATHS:
        if candidate and os.path.exists(candidate):
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size=size)


def text_mask(
    rows: int, columns: int, lines: list[tuple[int, int, str, int]], face: str | None = None
) -> np.ndarray:
    """Boolean mask of the glyphs of ``lines`` = [(x, y, text, size)]."""
    image = Image.new("L", (columns, rows), 0)
    draw = ImageDraw.Draw(image)
    for x, y, text, size in lines:
        draw.text((x, y), text, fill=255, font=font(size, face))
    return np.asarray(image) > 127


def glyph_boxes(
    lines: list[tuple[int, int, str, int]], face: str | None = None
) -> tuple[Glyph, ...]:
    """Per character of ``lines``, the box PIL draws it in (``textbbox`` at the character's
    advance in the line), grown by one pixel for antialiasing."""
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    out: list[Glyph] = []
    for x, y, text, size in lines:
        typeface = font(size, face)
        for i, char in enumerate(text):
            if char.isspace():
                continue
            left = x + typeface.getlength(text[:i])
            x0, y0, x1, y1 = draw.textbbox((left, y), char, font=typeface)
            box = Box(int(x0) - 1, int(y0) - 1, int(np.ceil(x1)) + 1, int(np.ceil(y1)) + 1)
            out.append(Glyph(text, char, box))
    return tuple(out)


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


# ---------------------------------------------------------------- large fonts (issue 18)

BIRTH = dt.date(1961, 3, 12)  # 12 March: day and month differ, so DD/MM and MM/DD both occur
DATE_PARTS = ("12", "03", "1961", "MARCH", "MAR")
NAME_PARTS = ("DOE", "JOHN")
WHITE = "white"
BLACK = "black"
YELLOW = "yellow"  # colour images only: ultrasound annotations are often yellow or green
RGB_COLOURS = {WHITE: (255, 255, 255), BLACK: (0, 0, 0), YELLOW: (255, 230, 40)}


@dataclass(frozen=True)
class LargeText:
    """A real sample image with PHI burned in 60-100 px high: (x, y, text, size) lines."""

    name: str
    sample: str
    lines: tuple[tuple[int, int, str, int], ...]
    parts: tuple[str, ...]
    technical: tuple[str, ...] = ()
    face: str | None = None
    colour: str = WHITE
    deid_data: bool = False


LARGE_TEXT: tuple[LargeText, ...] = (
    LargeText(
        "large-us-dob-dmy",
        "JPGLosslessP14SV1_1s_1f_8b.dcm",
        ((30, 300, "DOB 12/03/1961", 90),),
        DATE_PARTS[:3],
        technical=("65bpm", "Index", "HPen"),
    ),
    LargeText(
        "large-mr-mdy-name",
        "MR2_UNCR.dcm",
        ((40, 120, "03-12-1961", 120), (40, 700, "DOE JOHN", 100)),
        DATE_PARTS[:3] + NAME_PARTS,
    ),
    LargeText(
        "large-ct-ymd-512",
        "693_UNCR.dcm",
        ((20, 380, "1961.03.12", 82),),
        DATE_PARTS[:3],
        face=CONDENSED,
    ),
    LargeText(
        "large-us-rgb-day-mon",
        "US1_UNCR.dcm",
        ((30, 200, "12 Mar 1961", 80),),
        ("12", "MAR", "1961"),
        technical=("TIS",),
    ),
    LargeText(
        "large-us-rgb-yellow-mdy",
        "US1_UNCR.dcm",
        ((30, 190, "03-12-1961", 90),),
        DATE_PARTS[:3],
        technical=("TIS",),
        face=CONDENSED,
        colour=YELLOW,
    ),
    LargeText(
        "large-palette-month-day",
        "OBXXXX1A.dcm",
        ((30, 260, "March 12, 1961", 80),),
        ("MARCH", "12", "1961"),
        face=CONDENSED,
    ),
    LargeText(
        "large-mr-mrn-name",
        "MR2_J2KR.dcm",
        ((30, 200, "MRN 48213377", 110), (30, 520, "DOE, JOHN", 100)),
        (MRN, *NAME_PARTS),
    ),
    LargeText(
        "large-screenshot-dark-dmy",
        "humans/ctbrain1.dcm",
        ((20, 40, "12/03/1961", 80),),
        DATE_PARTS[:3],
        face=CONDENSED,
        colour=BLACK,
        deid_data=True,
    ),
)


def large_text(spec: LargeText) -> PixelCase:
    """Burn ``spec`` into its sample at the top of the displayed range (or black), keeping the
    glyph boxes as ground truth."""
    ds = _deid_data(spec.sample) if spec.deid_data else _sample(spec.sample)
    _patient(ds)
    ds.PatientBirthDate = BIRTH.strftime("%Y%m%d")
    frames = decoded(ds)
    rows, columns = frames.shape[1:3]
    lines = list(spec.lines)
    mask = text_mask(rows, columns, lines, spec.face)
    if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
        from pydicom.pixels.processing import apply_color_lut

        lut = apply_color_lut(np.arange(256, dtype=np.uint8), ds).astype(np.int64).sum(axis=-1)
        value: object = np.uint8(np.argmax(lut) if spec.colour == WHITE else np.argmin(lut))
    elif frames.ndim == 4:
        value = np.array(RGB_COLOURS[spec.colour], np.uint8)
    else:
        value = frames.max() if spec.colour == WHITE else frames.min()
    photometric = "RGB" if frames.ndim == 4 else None
    store_native(ds, burn(frames, mask, value), photometric)
    return PixelCase(
        spec.name,
        ds,
        context_for(ds),
        phi_tokens=tuple(text for _, _, text, _ in spec.lines),
        technical_tokens=spec.technical,
        phi_pixels=mask[None],
        glyphs=glyph_boxes(lines, spec.face),
        phi_parts=spec.parts,
    )


LARGE_BUILDERS: dict[str, Callable[[], PixelCase]] = {
    spec.name: functools.partial(large_text, spec) for spec in LARGE_TEXT
}


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
    return {**BUILDERS, **LARGE_BUILDERS}[name]()


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


# ---------------------------------------------------------------- ground truth per glyph


def glyphs_uncovered(case: PixelCase, out: np.ndarray, fill: object) -> list[Glyph]:
    """Glyphs of PHI values whose box in the output ``out`` (frames, rows, columns[, samples])
    is not entirely the redaction fill: something of the glyph may still show."""
    frame = out[0]
    missing: list[Glyph] = []
    for glyph in case.glyphs:
        b = glyph.box
        window = frame[max(b.y0, 0) : b.y1, max(b.x0, 0) : b.x1]
        if not (window == fill).all():
            missing.append(glyph)
    return missing


def parts_read(case: PixelCase, words: list[str]) -> list[str]:
    """The case's value parts that OCR ``words`` show: a date component or name token as a whole
    run of letters or digits, and any three digits in a row of a longer part (an ID, a year)."""
    import re

    runs = [r.upper() for w in words for r in re.findall(r"[A-Za-z]+|[0-9]+", w)]
    found: list[str] = []
    for part in case.phi_parts:
        if part.isdigit() and len(part) >= 3:
            windows = {part[i : i + 3] for i in range(len(part) - 2)}
            if any(w in run for run in runs if run.isdigit() for w in windows):
                found.append(part)
        elif any(
            run == part or (part.isdigit() and run.lstrip("0") == part.lstrip("0")) for run in runs
        ):
            found.append(part)
    return found


def value_lines(case: PixelCase) -> list[tuple[str, int, int]]:
    """Each PHI value drawn and the rows of its line (first, last + 1)."""
    lines: list[tuple[str, int, int]] = []
    for value in dict.fromkeys(g.value for g in case.glyphs):
        boxes = [g.box for g in case.glyphs if g.value == value]
        lines.append((value, min(b.y0 for b in boxes), max(b.y1 for b in boxes)))
    return lines


def words_on_value_lines(ds: pydicom.Dataset, case: PixelCase) -> list[str]:
    """What OCR reads of the output on the rows of the PHI values: the whole frame read as
    the other tests do (words on those rows), and each line re-read (:func:`reread_lines`)."""
    lines = value_lines(case)
    whole = [
        w.text
        for _, w in read_located(ds)
        if any(w.box.y0 < y1 and y0 < w.box.y1 for _, y0, y1 in lines)
    ]
    return whole + reread_lines(ds, case)


def reread_lines(ds: pydicom.Dataset, case: PixelCase) -> list[str]:
    """OCR the rows of every PHI line of the output, the independent way the tests check: the
    ``tesseract`` program, as shown and text-end pixels only, line heights 32 and 64 px, page
    segmentation 6, 7 and 11."""
    from PIL import ImageOps

    from gateway.pixels.ocr import PageSegMode, TesseractEngine
    from gateway.pixels.render import Palette, dark_on_light, display_grey

    pixels = decoded(ds)
    grey = display_grey(pixels[0], str(ds.PhotometricInterpretation), Palette.from_dataset(ds))
    shown = dark_on_light(grey)
    light_text = float(grey.mean()) < 128.0
    peak = pixels[0].max(axis=-1) if pixels[0].ndim == 3 else grey  # yellow text: R or G at top
    only_text = np.where(peak >= 250 if light_text else peak <= 5, 0, 255).astype(np.uint8)
    engine = TesseractEngine()
    words: list[str] = []
    for _, y0, y1 in value_lines(case):
        height = y1 - y0
        band = slice(max(0, y0 - height // 2), y1 + height // 2)
        for rendering in (shown, only_text):
            for target in (32, 64):
                crop = Image.fromarray(np.ascontiguousarray(rendering[band]))
                scale = target / height
                crop = crop.resize((round(crop.width * scale), round(crop.height * scale)))
                crop = ImageOps.expand(crop, border=12, fill=255)
                for psm in PageSegMode:
                    words.extend(w.text for w in engine.read(crop, psm))
    return words
