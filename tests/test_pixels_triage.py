"""Every image examined: the text-presence triage sends CT localizers, dose screens and
secondary captures with burned-in identity to OCR, leaves plain anatomy unread, and the Clean
Pixel Data claim (113101, BurnedInAnnotation NO) follows what was examined.

The triage units need no OCR; the stage and pipeline cases need tesseract (skipped with a
reason when it is absent).
"""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from gateway.dicom import tags as T
from gateway.errors import QuarantineError, ReasonCode
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.dicom_stages import DicomProcessor
from gateway.pixels import PixelStage
from gateway.pixels.codec import decode
from gateway.pixels.model import Box, Triage, Word
from gateway.pixels.render import Palette, display_grey
from gateway.pixels.triage import triage, triage_frames
from gateway.profiles.loader import load_profile
from gateway.profiles.model import ExaminePolicy, PixelExamineRule, PixelSettings, Profile
from gateway.text import PhiContext
from tests import pixel_fixtures as fx
from tests import triage_fixtures as tf

needs_ocr = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="tesseract-ocr is not installed"
)

# Real images without text that the triage still sends to OCR (each costs one OCR call).
KNOWN_FALSE_ALARMS = {
    "real-mr2_uncr": "subcutaneous fat texture along the shoulder, four blobs aligned like a word",
    "real-mr2_j2kr": "the same image, JPEG 2000",
}


def _grey(ds: pydicom.Dataset) -> tuple[np.ndarray, bool]:
    pixels = decode(ds)
    palette = Palette.from_dataset(ds)
    grey = np.stack([display_grey(f, pixels.photometric_out, palette) for f in pixels.frames])
    deep = pixels.samples == 1 and palette is None and pixels.bits_allocated > 8
    return grey, deep


# ------------------------------------------------------------------ the triage alone


@pytest.mark.parametrize("name", list(tf.TEXT_CASES))
def test_burned_in_identity_is_text_likely(name: str) -> None:
    case = tf.build(name)
    grey, deep = _grey(case.fresh())
    assert triage_frames(grey, deep).text_likely


@pytest.mark.parametrize("name", list(tf.NO_TEXT_CASES))
def test_plain_anatomy_is_not_text(name: str) -> None:
    grey, deep = _grey(tf.build(name).fresh())
    assert triage_frames(grey, deep).text_likely is (name in KNOWN_FALSE_ALARMS)


def test_a_ct_series_without_text_is_never_sent_to_ocr() -> None:
    series = tf.ct_series(40)
    flagged = [ds.InstanceNumber for ds in series if triage_frames(*_grey(ds)).text_likely]
    assert flagged == []


def test_the_same_slice_with_text_is() -> None:
    """The series' slices are not text-free by construction of the triage: burn a date in."""
    ds = tf.ct_series(1)[0]
    grey, deep = _grey(ds)
    assert not triage(grey[0], deep).text_likely
    frame = fx.decoded(ds)[0].copy()
    frame[tf.glyphs(512, 512, [(20, 470, fx.DOB, 12)])] = frame.max()
    assert triage(display_grey(frame, "MONOCHROME2", None), deep).text_likely


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DOE^JOHN", True),
        ("48213377", True),
        ("L", False),  # a laterality marker: one glyph is not a line
        ("R", False),
    ],
)
def test_a_line_needs_several_glyphs(text: str, expected: bool) -> None:
    frame = np.zeros((256, 256), dtype=np.uint8)
    frame[tf.glyphs(256, 256, [(40, 100, text, 14)])] = 255
    assert triage(frame).text_likely is expected


def test_large_frames_are_reduced_and_still_seen() -> None:
    """A 2048x2048 frame with 28 px text (14 px after the 2x reduction)."""
    frame = np.full((2048, 2048), 40, dtype=np.uint8)
    frame[tf.glyphs(2048, 2048, [(100, 1900, f"{fx.NAME} {fx.MRN}", 28)])] = 250
    assert triage(frame).text_likely
    assert not triage(np.full((2048, 2048), 40, dtype=np.uint8)).text_likely


# ------------------------------------------------------------------ the stage


class _MustNotRead:
    """An OCR engine that fails the test when called."""

    name = "must-not-read"

    def is_available(self) -> bool:
        return True

    def missing_dependency(self) -> str | None:
        return None

    def read(self, image: object) -> list[Word]:
        raise AssertionError("OCR ran on an image the triage found free of text")


class _ReadsNothing(_MustNotRead):
    calls = 0

    def read(self, image: object) -> list[Word]:
        type(self).calls += 1
        return [Word("120", Box(1, 1, 20, 10), 90.0)]


def _stage(policy: ExaminePolicy = ExaminePolicy.TRIAGE, **kwargs: object) -> PixelStage:
    settings = PixelSettings(examine=PixelExamineRule(policy=policy), deid_filters=False)
    return PixelStage(settings, **kwargs)  # type: ignore[arg-type]


def test_triage_without_text_examines_without_ocr_and_leaves_pixels_alone() -> None:
    case = tf.build("real-693_uncr")
    ds = case.fresh()
    before = ds.PixelData
    report = _stage(engine=_MustNotRead()).clean(ds, case.context)
    assert report.examined and report.cleaned and report.verified
    assert report.triage is Triage.NO_TEXT and report.ocr_reads == 0 and report.boxes == 0
    assert ds.PixelData == before


def test_text_likely_goes_to_ocr() -> None:
    case = tf.build("dose-screen-mono-12")
    report = _stage(engine=_ReadsNothing()).clean(case.fresh(), case.context)
    assert report.triage is Triage.TEXT_LIKELY and report.ocr_reads >= 1
    assert _ReadsNothing.calls >= 1


class _Absent(_MustNotRead):
    def is_available(self) -> bool:
        return False

    def missing_dependency(self) -> str | None:
        return "tesseract-ocr (Debian package)"


def test_without_ocr_only_images_with_text_are_quarantined() -> None:
    plain = tf.build("real-693_uncr")
    report = _stage(engine=_Absent()).clean(plain.fresh(), plain.context)
    assert report.cleaned and report.triage is Triage.NO_TEXT
    burned = tf.build("localizer-rg1-bold-12")
    with pytest.raises(QuarantineError) as caught:
        _stage(engine=_Absent()).clean(burned.fresh(), burned.context)
    assert caught.value.reason is ReasonCode.PIXEL_CLEANER_UNAVAILABLE
    listed = plain.fresh()
    listed.Modality = "US"
    with pytest.raises(QuarantineError):
        _stage(engine=_Absent()).clean(listed, plain.context)


def test_listed_images_skip_the_triage() -> None:
    case = tf.build("real-693_uncr")
    ds = case.fresh()
    ds.ImageType = ["DERIVED", "SECONDARY"]
    report = _stage(engine=_ReadsNothing()).clean(ds, case.context)
    assert report.triage is Triage.NOT_RUN and report.ocr_reads >= 1


def test_policy_all_reads_every_image_and_listed_examines_none_of_these() -> None:
    ds = tf.build("real-693_uncr").fresh()
    assert _stage(ExaminePolicy.ALL).clean(ds, PhiContext()).triage is Triage.NOT_RUN
    assert not _stage(ExaminePolicy.LISTED).needs_examination(tf.build("real-693_uncr").dataset)


@needs_ocr
@pytest.mark.parametrize("name", list(tf.TEXT_CASES))
def test_burned_in_identity_is_redacted_under_triage(name: str) -> None:
    case = tf.build(name)
    before = fx.read_words(case.fresh())
    readable = [t for t in case.phi_tokens if fx.token_read(t, before)]
    ds = case.fresh()
    report = _stage().clean(ds, case.context)
    assert report.triage is Triage.TEXT_LIKELY and report.cleaned and report.verified
    after = fx.read_words(ds)
    assert [t for t in readable if fx.token_read(t, after)] == []
    if readable:
        assert report.boxes > 0


# ------------------------------------------------------------------ through the processor


def _processor(policy: ExaminePolicy) -> DicomProcessor:
    research = load_profile("research")
    pixels = research.dicom.pixels.model_copy(
        update={"examine": research.dicom.pixels.examine.model_copy(update={"policy": policy})}
    )
    dicom = research.dicom.model_copy(update={"pixels": pixels})
    profile: Profile = research.model_copy(update={"dicom": dicom})
    return DicomProcessor(profile, Linkage.from_profile(profile, KeyRing()))


def _claims(ds: pydicom.Dataset) -> tuple[bool, str | None]:
    codes = {str(item.CodeValue) for item in ds.get("DeidentificationMethodCodeSequence", [])}
    value = ds.get(T.BURNED_IN_ANNOTATION)
    return "113101" in codes, None if value is None else str(value.value)


def test_research_profile_triages_ct_and_mr() -> None:
    stage = PixelStage(load_profile("research").dicom.pixels)
    for name in ("real-693_uncr", "real-mr_small"):
        ds = tf.build(name).dataset
        assert stage.needs_examination(ds)
    localizer = tf.build("localizer-rg1-bold-12").dataset
    assert stage.needs_examination(localizer)  # LOCALIZER is listed: OCR without triage


@needs_ocr
def test_plain_ct_is_claimed_clean_only_when_examined() -> None:
    examined = _processor(ExaminePolicy.TRIAGE).process(tf.build("real-693_uncr").fresh())
    assert examined.pixels_cleaned and _claims(examined.dataset) == (True, "NO")
    skipped = _processor(ExaminePolicy.LISTED).process(tf.build("real-693_uncr").fresh())
    assert not skipped.pixels_cleaned
    assert _claims(skipped.dataset)[0] is False
    assert _claims(skipped.dataset)[1] != "NO"


@needs_ocr
@pytest.mark.parametrize("name", ["dose-screen-mono-12", "sc-ct512-corner-max-12"])
def test_burned_in_ct_goes_out_clean_and_claimed(name: str) -> None:
    case = tf.build(name)
    done = _processor(ExaminePolicy.TRIAGE).process(case.fresh())
    words = fx.read_words(done.dataset)
    assert [t for t in case.phi_tokens if fx.token_read(t, words)] == []
    assert done.pixels_cleaned and _claims(done.dataset) == (True, "NO")
