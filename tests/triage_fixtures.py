"""Images whose header does not ask for OCR but whose pixels carry the patient: CT localizers,
CT dose screens and secondary captures with names, MRNs and birth dates burned in, rendered
(PIL) on real sample images; and real CT / MR samples without any text.

The text cases carry ordinary primary-image headers (Modality CT or MR, ImageType
ORIGINAL\\PRIMARY, no BurnedInAnnotation), as devices that do not flag their annotations write
them: only the pixel triage can send them to OCR. Everything is built in memory from files
shipped by pydicom and pydicom-data.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file

from gateway.text import PhiContext
from tests.pixel_fixtures import ACCESSION, DOB, MRN, NAME, context_for, decoded, store_native

FONTS = {
    "sans-bold": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "sans": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "condensed": "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf",
}
Line = tuple[int, int, str, int]  # x, y, text, font size
PHI_TOKENS = ("DOE", MRN, DOB)


@dataclass(frozen=True)
class TriageCase:
    name: str
    kind: str  # localizer | dose-screen | secondary-capture | no-text
    dataset: pydicom.Dataset
    context: PhiContext
    phi_tokens: tuple[str, ...] = ()
    phi_pixels: np.ndarray | None = None  # (frames, rows, columns): glyphs of burned PHI

    def fresh(self) -> pydicom.Dataset:
        return copy.deepcopy(self.dataset)


def glyphs(
    rows: int, columns: int, lines: list[Line], face: str = "sans-bold", antialias: bool = True
) -> np.ndarray:
    """Boolean mask of the glyphs of ``lines`` (``antialias=False``: a bitmap-like font)."""
    image = Image.new("L", (columns, rows), 0)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "L" if antialias else "1"
    path = FONTS[face]
    for x, y, text, size in lines:
        font = (
            ImageFont.truetype(path, size)
            if os.path.exists(path)
            else ImageFont.load_default(size=size)
        )
        draw.text((x, y), text, fill=255, font=font)
    return np.asarray(image) > 127


def _sample(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


def _primary(ds: pydicom.Dataset, modality: str, image_type: list[str]) -> None:
    """A primary image's header that no examine list names, with the patient of the text."""
    ds.Modality = modality
    ds.ImageType = image_type
    for keyword in ("BurnedInAnnotation", "SeriesDescription"):
        if keyword in ds:
            del ds[keyword]
    ds.PatientName = NAME
    ds.PatientID = MRN
    ds.PatientBirthDate = "19620314"
    ds.AccessionNumber = ACCESSION


def _as_ct(ds: pydicom.Dataset, frame: np.ndarray) -> None:
    """Store one signed 16-bit frame (HU) in 693_UNCR's CT header."""
    ds.Rows, ds.Columns = frame.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    store_native(ds, frame.astype(np.int16)[None])


def _resized(frame: np.ndarray, rows: int, columns: int) -> np.ndarray:
    image = Image.fromarray(frame.astype(np.float32))
    return np.asarray(image.resize((columns, rows), Image.Resampling.BILINEAR))


@functools.cache
def _radiograph(name: str) -> np.ndarray:
    """A real projection radiograph (pydicom's CR samples), bright bone, as float 0..1."""
    ds = _sample(name)
    frame = decoded(ds)[0].astype(np.float32)
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        frame = frame.max() - frame
    lo, hi = np.percentile(frame, (1, 99.5))
    return np.asarray(np.clip((frame - lo) / (hi - lo or 1.0), 0.0, 1.0))


# ------------------------------------------------------------------ localizers


def localizer(source: str = "RG1_UNCR.dcm", size: int = 12, face: str = "sans-bold") -> TriageCase:
    """A CT localizer (topogram): a real radiograph on a 512x512 CT matrix, with the layout of
    a scanner's scout annotations (patient top left, technique bottom left), text at the top
    of the stored range."""
    ds = _sample("693_UNCR.dcm")
    _primary(ds, "CT", ["ORIGINAL", "PRIMARY", "LOCALIZER"])
    picture = _resized(_radiograph(source), 512, 512)
    frame = (-1024 + picture * 2800).astype(np.int16)
    step = size + 4
    phi = [(8, 8, NAME, size), (8, 8 + step, MRN, size), (8, 8 + 2 * step, f"*{DOB}", size)]
    technical = [(8, 512 - 2 * step - 4, "120 kV  35 mA", size), (8, 512 - step - 4, "TOP", size)]
    mask = glyphs(512, 512, phi, face)
    frame[mask | glyphs(512, 512, technical, face)] = 3071
    _as_ct(ds, frame)
    return TriageCase(
        "localizer",
        "localizer",
        ds,
        context_for(ds),
        PHI_TOKENS,
        mask[None],
    )


# ------------------------------------------------------------------ dose screens

DOSE_TABLE = [
    "Total mAs 2145    Total DLP 412.3 mGy*cm",
    "Scan  kV  mAs  CTDIvol  DLP",
    "1  120   35   0.13    2.4",
    "2  120  180  11.82  409.9",
]


def dose_screen(size: int = 12, dark_on_light: bool = False, face: str = "mono") -> TriageCase:
    """A CT dose screen (patient protocol): text on an empty CT matrix with a thumbnail of the
    real localizer, as scanners save it after the exam; the patient's name, ID and birth date
    head the table."""
    ds = _sample("693_UNCR.dcm")
    _primary(ds, "CT", ["ORIGINAL", "PRIMARY", "OTHER"])
    background, ink = (1800, -1024) if dark_on_light else (-1024, 3071)
    frame = np.full((512, 512), background, dtype=np.int16)
    thumbnail = _resized(_radiograph("RG1_UNCR.dcm"), 128, 128)
    frame[16:144, 368:496] = (-1024 + thumbnail * 2800).astype(np.int16)
    step = size + 6
    phi = [
        (16, 24, f"Patient: {NAME}", size),
        (16, 24 + step, f"ID: {MRN}", size),
        (16, 24 + 2 * step, f"Birth date: {DOB}", size),
    ]
    table = [(16, 200 + i * step, text, size) for i, text in enumerate(DOSE_TABLE)]
    mask = glyphs(512, 512, phi, face)
    frame[mask | glyphs(512, 512, table, face)] = ink
    _as_ct(ds, frame)
    return TriageCase(
        "dose-screen",
        "dose-screen",
        ds,
        context_for(ds),
        PHI_TOKENS,
        mask[None],
    )


# ------------------------------------------------------------------ secondary captures

Placement = Callable[[int, int, int], list[Line]]


def _corner(rows: int, columns: int, size: int) -> list[Line]:
    step = size + 3
    return [(3, 3, NAME, size), (3, 3 + step, MRN, size), (3, rows - step - 2, DOB, size)]


def _over_anatomy(rows: int, columns: int, size: int) -> list[Line]:
    x, y = columns // 4, rows // 2 - size
    return [(x, y, NAME, size), (x, y + size + 3, f"DOB {DOB}", size)]


PLACEMENTS: dict[str, Placement] = {"corner": _corner, "anatomy": _over_anatomy}
LEVELS = {"max": 1.0, "grey": 0.7, "min": 0.0}  # of the stored range


def secondary_capture(
    source: str,
    size: int,
    where: str = "corner",
    level: str = "max",
    face: str = "sans-bold",
    antialias: bool = True,
) -> TriageCase:
    """A real CT or MR image with the patient's name, MRN and birth date burned in, as a
    workstation's screen save or a film-scanner capture keeps them, under a primary header."""
    ds = _sample(source)
    _primary(ds, str(ds.Modality), ["ORIGINAL", "PRIMARY", "AXIAL"])
    frames = decoded(ds)
    rows, columns = frames.shape[1:3]
    mask = glyphs(rows, columns, PLACEMENTS[where](rows, columns, size), face, antialias)
    lo, hi = float(frames.min()), float(frames.max())
    frames = frames.copy()
    frames[0][mask] = np.asarray(lo + LEVELS[level] * (hi - lo)).astype(frames.dtype)
    store_native(ds, frames)
    return TriageCase(
        "secondary-capture",
        "secondary-capture",
        ds,
        context_for(ds),
        ("DOE", DOB) if where == "anatomy" else PHI_TOKENS,
        mask[None],
    )


# ------------------------------------------------------------------ real images without text

NO_TEXT = (
    "693_UNCR.dcm",
    "693_J2KR.dcm",
    "bad_sequence.dcm",
    "explicit_VR-UN.dcm",
    "eCT_Supplemental.dcm",
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "emri_small.dcm",
    "MR2_UNCR.dcm",
    "MR2_J2KR.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
    "examples_overlay.dcm",
    "JPEG2000_UNC.dcm",
    "RG1_UNCR.dcm",
    "liver.dcm",
)


def no_text(source: str) -> TriageCase:
    ds = _sample(source)
    return TriageCase(f"real-{source.removesuffix('.dcm').lower()}", "no-text", ds, context_for(ds))


TEXT_CASES: dict[str, Callable[[], TriageCase]] = {
    "localizer-rg1-bold-12": functools.partial(localizer, "RG1_UNCR.dcm", 12),
    "localizer-rg1-sans-10": functools.partial(localizer, "RG1_UNCR.dcm", 10, "sans"),
    "localizer-rg3-condensed-14": functools.partial(localizer, "RG3_UNCR.dcm", 14, "condensed"),
    "localizer-rg3-mono-11": functools.partial(localizer, "RG3_UNCR.dcm", 11, "mono"),
    "dose-screen-mono-12": functools.partial(dose_screen, 12),
    "dose-screen-sans-10": functools.partial(dose_screen, 10, face="sans"),
    "dose-screen-dark-mono-12": functools.partial(dose_screen, 12, dark_on_light=True),
    "dose-screen-dark-bold-14": functools.partial(
        dose_screen, 14, dark_on_light=True, face="sans-bold"
    ),
    "sc-ct512-corner-max-12": functools.partial(secondary_capture, "693_UNCR.dcm", 12),
    "sc-ct512-corner-grey-10": functools.partial(
        secondary_capture, "693_UNCR.dcm", 10, level="grey", face="sans"
    ),
    "sc-ct512-anatomy-min-12": functools.partial(
        secondary_capture, "693_UNCR.dcm", 12, "anatomy", "min"
    ),
    "sc-ct512-anatomy-max-mono-11": functools.partial(
        secondary_capture, "693_UNCR.dcm", 11, "anatomy", "max", "mono"
    ),
    "sc-ct512-corner-aliased-12": functools.partial(
        secondary_capture, "693_UNCR.dcm", 12, face="mono", antialias=False
    ),
    "sc-ct128-corner-max-11": functools.partial(secondary_capture, "CT_small.dcm", 11),
    "sc-ct128-corner-grey-10": functools.partial(
        secondary_capture, "CT_small.dcm", 10, level="grey", face="sans"
    ),
    "sc-mr64-corner-max-8": functools.partial(
        secondary_capture, "MR_small.dcm", 8, face="condensed"
    ),
    "sc-mr1024-corner-max-24": functools.partial(secondary_capture, "MR2_UNCR.dcm", 24),
    "sc-mr1024-anatomy-min-20": functools.partial(
        secondary_capture, "MR2_UNCR.dcm", 20, "anatomy", "min", "sans"
    ),
    "sc-mr484-corner-grey-12": functools.partial(
        secondary_capture, "MR-SIEMENS-DICOM-WithOverlays.dcm", 12, level="grey"
    ),
    "sc-mr484-anatomy-max-13": functools.partial(
        secondary_capture, "MR-SIEMENS-DICOM-WithOverlays.dcm", 13, "anatomy"
    ),
}
NO_TEXT_CASES = {f"real-{source.removesuffix('.dcm').lower()}": source for source in NO_TEXT}


@functools.cache
def build(name: str) -> TriageCase:
    if name in NO_TEXT_CASES:
        return no_text(NO_TEXT_CASES[name])
    return dataclasses.replace(TEXT_CASES[name](), name=name)


# ------------------------------------------------------------------ a CT series


def ct_series(count: int = 200, seed: int = 11) -> list[pydicom.Dataset]:
    """``count`` 512x512 axial slices made from pydicom-data's real CT (693_UNCR): each slice
    rotated, shifted and rescaled a little with its own noise, as neighbouring slices differ,
    with its own instance UID and position. No text anywhere."""
    from pydicom.uid import generate_uid
    from scipy import ndimage

    template = _sample("693_UNCR.dcm")
    base = decoded(template)[0].astype(np.float32)
    rng = np.random.default_rng(seed)
    series_uid = generate_uid()
    out: list[pydicom.Dataset] = []
    for index in range(count):
        ds = copy.deepcopy(template)
        angle = float(rng.uniform(-4, 4))
        moved = ndimage.rotate(base, angle, reshape=False, order=1, mode="nearest")
        moved = np.roll(moved, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), (0, 1))
        moved = moved * float(rng.uniform(0.95, 1.05)) + rng.normal(0, 6, moved.shape)
        lo, hi = int(base.min()), int(base.max())
        frame = np.clip(moved, lo, hi).astype(np.int16)
        store_native(ds, frame[None])
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = index + 1
        ds.SliceLocation = float(index) * 1.25
        out.append(ds)
    return out
