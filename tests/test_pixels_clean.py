"""End to end: burned-in PHI in real sample images is redacted, losslessly, and verified.

Needs tesseract (Debian ``tesseract-ocr``); skipped with a reason when it is absent (CI has it).
"""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from gateway.errors import QuarantineError, ReasonCode
from gateway.pixels import PixelStage
from gateway.pixels.model import Box, Word
from gateway.pixels.regions import RegionRules
from gateway.profiles.model import PixelSettings
from gateway.text import PhiContext
from tests import pixel_fixtures as fx

pytestmark = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="tesseract-ocr is not installed"
)

STAGES: dict[str, PixelStage] = {}


def stage(mode: str = "sensitive-only", **settings: object) -> PixelStage:
    key = f"{mode}{sorted(settings.items())}"
    if key not in STAGES:
        STAGES[key] = PixelStage(PixelSettings(mode=mode, **settings))  # type: ignore[arg-type]
    return STAGES[key]


EXPECTED_PHOTOMETRIC = {
    "us-grey-real": "MONOCHROME2",
    "ct-int16-rle": "MONOCHROME2",
    "ct-int16-mono1": "MONOCHROME1",
    "us-palette": "PALETTE COLOR",
    "us-mono8-jpeg-lossless": "MONOCHROME2",
    "mr-uint16-j2k": "MONOCHROME2",
}


@pytest.mark.parametrize("name", list(fx.BUILDERS))
def test_burned_in_phi_is_removed(name: str) -> None:
    case = fx.build(name)
    before_ds = case.fresh()
    frames = fx.frames_to_read(case)
    located = fx.read_located(before_ds, frames)
    before = [w.text for _, w in located]
    readable = [t for t in case.phi_tokens if fx.token_read(t, before)]
    assert readable, "fixture sanity: OCR reads the burned-in PHI before cleaning"
    known = RegionRules([], deid_filters=True).regions(before_ds)
    technical = [
        (f, w)
        for t in case.technical_tokens
        for f, w in fx.token_boxes(t, located)
        if not any(_overlaps(w.box, box) for box, _ in known.redact)  # vendor banner: redacted
    ]

    ds = case.fresh()
    decoded_in = fx.decoded(case.fresh())
    report = stage().clean(ds, case.context)

    assert report.examined and report.cleaned and report.verified and report.boxes > 0
    assert report.frames == decoded_in.shape[0]
    after = fx.read_words(ds, frames)
    assert [t for t in case.phi_tokens if fx.token_read(t, after)] == []

    # lossless, right photometric, pixels outside boxes bit-identical
    syntax = ds.file_meta.TransferSyntaxUID
    assert not syntax.is_compressed or syntax == pydicom.uid.RLELossless
    assert ds.PhotometricInterpretation == EXPECTED_PHOTOMETRIC.get(name, "RGB")
    if int(ds.SamplesPerPixel) == 3:
        assert ds.PlanarConfiguration == 0
    reread = pydicom.dcmread(_roundtrip(ds))
    out = fx.decoded(reread)
    assert out.shape == decoded_in.shape and out.dtype == decoded_in.dtype
    changed = np.any(out != decoded_in, axis=-1) if out.ndim == 4 else out != decoded_in
    assert 0 < changed.mean() < 0.25
    if case.phi_pixels is not None:  # ground truth, independent of what OCR can read
        assert fx.phi_pixels_covered(case, changed) == 1.0
    for frame, word in technical:  # technical text kept in sensitive-only mode
        b = word.box
        assert not changed[frame, b.y0 : b.y1, b.x0 : b.x1].any(), "technical text redacted"
    fill = out[changed]
    assert (fill == fill[0]).all(), "redacted pixels hold one fill value"
    assert "BurnedInAnnotation" not in ds or ds.BurnedInAnnotation == case.dataset.get(
        "BurnedInAnnotation"
    )


def _overlaps(a: Box, b: Box) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _roundtrip(ds: pydicom.Dataset) -> object:
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def test_cine_static_text_found_once_and_changing_text_not_missed() -> None:
    case = fx.build("cine-30")
    ds = case.fresh()
    report = stage().clean(ds, case.context)
    assert report.frames == 30
    # detection (3), local verification (1), the line re-reads (one per redacted line read as a
    # single line, two for all lines): a count that does not grow with the frames
    assert report.ocr_reads <= 12
    out = fx.decoded(ds)
    original = fx.decoded(case.fresh())
    shown = case.frames_with[fx.ACCESSION]
    for index in (shown[0], shown[-1]):
        assert not fx.token_read(fx.ACCESSION, fx.read_words(ds, [index]))
    # the accession's boxes are not burned into frames that never showed it
    other = [i for i in range(30) if i not in shown]
    moved = np.any(out[other] != original[other], axis=-1).sum(axis=0)
    assert moved[300:360, 300:460].sum() == 0


def test_all_text_mode_removes_technical_text_too() -> None:
    case = fx.build("us-rgb-native")
    ds = case.fresh()
    stage("all-text").clean(ds, case.context)
    after = fx.read_words(ds)
    assert not fx.token_read("16cm", after) and not fx.token_read("TIS", after)


def test_ultrasound_outside_regions_is_masked_when_the_profile_says_so() -> None:
    case = fx.build("us-grey-real")
    ds = case.fresh()
    report = stage(ultrasound_outside_regions=True).clean(ds, case.context)
    out = fx.decoded(ds)[0]
    assert report.cleaned
    assert (out[:38, :] == 0).all() and (out[:, :14] == 0).all()  # outside the region: black


def test_clean_image_is_left_untouched() -> None:
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    before = ds.PixelData
    report = stage(deid_filters=False).clean(ds, PhiContext())
    assert report.examined and report.cleaned and report.boxes == 0
    assert ds.PixelData == before
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless


class _StubbornEngine:
    """An OCR engine that always reads the patient's name: redaction can never satisfy it."""

    name = "stub"

    def is_available(self) -> bool:
        return True

    def missing_dependency(self) -> str | None:
        return None

    def read(self, image: object, psm: object = None) -> list[Word]:
        return [Word("DOE", Box(20, 20, 60, 40), 95.0), Word("JOHN", Box(66, 20, 110, 40), 95.0)]


class _AbsentEngine(_StubbornEngine):
    def is_available(self) -> bool:
        return False

    def missing_dependency(self) -> str | None:
        return "tesseract-ocr (Debian package)"


def test_phi_still_read_after_redaction_quarantines_without_values() -> None:
    case = fx.build("ct-int16-rle")
    pixel_stage = PixelStage(PixelSettings(deid_filters=False), engine=_StubbornEngine())
    with pytest.raises(QuarantineError) as caught:
        pixel_stage.clean(case.fresh(), case.context)
    assert caught.value.reason is ReasonCode.PIXEL_PHI_REMAINS
    assert "DOE" not in str(caught.value) and fx.MRN not in str(caught.value)


def test_unavailable_ocr_quarantines_naming_the_package() -> None:
    case = fx.build("ct-int16-rle")
    pixel_stage = PixelStage(PixelSettings(deid_filters=False), engine=_AbsentEngine())
    with pytest.raises(QuarantineError) as caught:
        pixel_stage.clean(case.fresh(), case.context)
    assert caught.value.reason is ReasonCode.PIXEL_CLEANER_UNAVAILABLE
    assert "tesseract-ocr" in caught.value.detail


def test_full_verification_rereads_whole_frames() -> None:
    case = fx.build("us-rgb-native")
    local = stage().clean(case.fresh(), case.context)
    full = stage(full_verification=True).clean(case.fresh(), case.context)
    assert full.cleaned and full.boxes == local.boxes
    assert full.ocr_reads >= local.ocr_reads


@pytest.mark.parametrize("output", ["rle-lossless", "jpeg2000-lossless"])
def test_compressed_lossless_output(output: str) -> None:
    case = fx.build("ct-int16-rle")
    ds = case.fresh()
    original = fx.decoded(case.fresh())
    stage(output=output).clean(ds, case.context)
    out = fx.decoded(pydicom.dcmread(_roundtrip(ds)))
    expected = {
        "rle-lossless": pydicom.uid.RLELossless,
        "jpeg2000-lossless": pydicom.uid.JPEG2000Lossless,
    }
    assert ds.file_meta.TransferSyntaxUID == expected[output]
    changed = out != original
    assert changed.any() and (out[changed] == out[changed][0]).all()


def test_both_tesseract_engines_read_the_same_text() -> None:
    from PIL import Image

    from gateway.pixels.libtesseract import LibTesseractEngine
    from gateway.pixels.ocr import TesseractEngine

    mask = fx.text_mask(80, 400, [(10, 20, "DOE JOHN 48213377", 28)])
    image = Image.fromarray(np.where(mask, 0, 255).astype(np.uint8))
    program = [w.text for w in TesseractEngine().read(image)]
    assert program == ["DOE", "JOHN", "48213377"]
    if LibTesseractEngine.is_available():
        assert [w.text for w in LibTesseractEngine().read(image)] == program
