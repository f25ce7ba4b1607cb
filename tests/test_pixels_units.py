"""Pixel stage units: examine rule, fuzzy deny-list, PHI decisions, frame planning, redaction,
lossless codec round trips. No OCR needed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.errors import ConfigurationError, QuarantineError, ReasonCode
from gateway.pixels import Box, PixelStage, TextMode
from gateway.pixels.codec import OutputEncoding, decode, write
from gateway.pixels.detect import apply
from gateway.pixels.frames import plan_reads
from gateway.pixels.fuzzy import DenyIndex, collapse
from gateway.pixels.model import BoxSource, Examination, Redaction, TextSegment, Word
from gateway.pixels.ocr import segments
from gateway.pixels.phi import OcrPhiClassifier
from gateway.pixels.regions import RegionRules, ultrasound_regions
from gateway.profiles.model import ExaminePolicy, PixelExamineRule, PixelSettings
from gateway.text import PhiContext
from tests.pixel_fixtures import text_mask


def _context() -> PhiContext:
    context = PhiContext()
    context.add_name("DOE^JOHN")
    context.add_name("ZZZ TEST PATIENTFIVE^NEW")
    context.add_identifier("00079241539")
    context.add_date(dt.date(1951, 8, 29))
    context.add_other("CCHS CLEVELAND CLINIC")
    return context


# ------------------------------------------------------------------ examine rule


def _ds(**values: object) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.PixelData = b"\0\0"
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


OCR, TRIAGE, NONE = Examination.OCR, Examination.TRIAGE, Examination.NONE
EXAMINE_CASES = [
    ({}, {"Modality": "US"}, OCR),
    ({}, {"Modality": "CT"}, TRIAGE),  # the default policy triages what no list names
    ({"policy": "listed"}, {"Modality": "CT"}, NONE),
    ({"policy": "all"}, {"Modality": "CT"}, OCR),
    ({}, {"Modality": "CT", "BurnedInAnnotation": "YES"}, OCR),
    ({"burned_in_annotation_yes": False}, {"Modality": "CT", "BurnedInAnnotation": "YES"}, TRIAGE),
    ({}, {"Modality": "CT", "ImageType": ["DERIVED", "SECONDARY"]}, OCR),
    ({"all": True}, {"Modality": "CT", "BurnedInAnnotation": "NO"}, OCR),  # legacy spelling
    ({"all": False}, {"Modality": "CT"}, TRIAGE),
    ({}, {"Modality": "US", "BurnedInAnnotation": "NO"}, OCR),  # header flags lie
    ({}, {"Modality": "MR", "BurnedInAnnotation": "NO"}, TRIAGE),
    (
        {"sop_classes": ["1.2.840.10008.5.1.4.1.1.2"]},
        {"Modality": "CT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"},
        OCR,
    ),
    ({"modalities": [], "policy": "listed"}, {"Modality": "US"}, NONE),
]


@pytest.mark.parametrize(("rule", "header", "expected"), EXAMINE_CASES)
def test_examination(
    rule: dict[str, object], header: dict[str, object], expected: Examination
) -> None:
    stage = PixelStage(PixelSettings(examine=PixelExamineRule(**rule), deid_filters=False))
    assert stage.examination(_ds(**header)) is expected
    assert stage.needs_examination(_ds(**header)) is (expected is not NONE)


def test_legacy_all_true_contradicting_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        PixelExamineRule(all=True, policy="listed")  # type: ignore[call-arg]


def test_no_pixel_data_is_not_examined() -> None:
    stage = PixelStage(
        PixelSettings(examine=PixelExamineRule(policy=ExaminePolicy.ALL), deid_filters=False)
    )
    assert stage.needs_examination(pydicom.Dataset()) is False


def test_dependency_report_names_a_package() -> None:
    missing = PixelStage.missing_dependency()
    assert PixelStage.is_available() is (missing is None)
    if missing is not None:
        assert "tesseract" in missing


# ------------------------------------------------------------------ fuzzy deny-list

FUZZY_CASES = [
    ("DOEAJOHN", True),  # ^ read as A
    ("D0E JOHN", True),
    ("Doe, John", True),
    ("ZZZ TEST PATIENTFI\\..", True),  # truncated on screen
    ("CLEVELAN..", True),
    ("9OO79241539", True),  # one misread digit, O for 0
    ("08/29/1951", True),
    ("08/29/51", True),
    ("Adv Breast", False),
    ("TISO.0 MI 0.6", False),
    ("L12-5 36Hz", False),
    ("16cm", False),
    ("Res Med Low", False),
]


@pytest.mark.parametrize(("text", "is_phi"), FUZZY_CASES)
def test_fuzzy_deny_list(text: str, is_phi: bool) -> None:
    hits = DenyIndex(_context()).search([text])
    assert (0 in hits) is is_phi


def test_collapse_folds_confusable_glyphs() -> None:
    assert collapse("D0E^J0HN") == collapse("DOE JOHN")
    assert collapse("l2O5") == collapse("1205")


def _segment(*texts: str) -> TextSegment:
    words = tuple(Word(t, Box(i * 50, 0, i * 50 + 40, 12), 90.0) for i, t in enumerate(texts))
    return TextSegment(words)


SENSITIVE_CASES = [
    (("DOB:", "01/02/1960"), True),
    (("MRN", "12345678"), True),
    (("05:24:57PM",), True),
    (("jane@example.org",), True),
    (("08/29/51",), True),
    (("11-05-25-142825",), True),
    (("SMITH^ANNA",), True),
    (("SMITH,", "ANNA"), True),
    (("Dr.", "Jones"), True),
    (("2D", "--", "100%"), False),
    (("20dB/DR60",), False),
    (("TIS:", "0.5,", "MI:", "1.4"), False),
    (("3/3/4",), False),
    (("llllll",), False),
    (("16cm",), False),
    (("TIS", "0.5"), False),
    (("H4.00", "MHz"), False),
    (("20dB/DR60",), False),
    (("Sag", "Liver", "L-M"), False),
]


@pytest.mark.parametrize(("words", "is_phi"), SENSITIVE_CASES)
def test_sensitive_only_decisions(words: tuple[str, ...], is_phi: bool) -> None:
    found = OcrPhiClassifier(TextMode.SENSITIVE_ONLY).find([_segment(*words)], PhiContext())
    assert bool(found) is is_phi


def test_all_text_redacts_technical_words_too() -> None:
    found = OcrPhiClassifier(TextMode.ALL_TEXT).find([_segment("TIS", "0.5", "16cm")], PhiContext())
    assert len(found) == 3


def test_segments_group_words_on_a_line_and_split_far_apart() -> None:
    words = [
        Word("DOE", Box(10, 10, 40, 24), 90),
        Word("JOHN", Box(46, 11, 90, 24), 90),
        Word("16cm", Box(600, 10, 650, 24), 90),
        Word("TIS", Box(10, 60, 40, 74), 90),
    ]
    texts = sorted(s.text for s in segments(words))
    assert texts == ["16cm", "DOE JOHN", "TIS"]


# ------------------------------------------------------------------ frames


def _cine(count: int = 8) -> np.ndarray:
    rng = np.random.default_rng(4)
    frames = np.zeros((count, 200, 300), dtype=np.uint8)
    frames[:, 60:190, 40:260] = rng.integers(0, 200, size=(count, 130, 220), dtype=np.uint8)
    return frames


def test_static_text_is_read_once() -> None:
    frames = _cine()
    frames[:, text_mask(200, 300, [(5, 5, "DOE JOHN", 16)])] = 255
    assert len(plan_reads(frames)) == 1


def test_a_frame_with_different_text_is_read() -> None:
    frames = _cine()
    mask = text_mask(200, 300, [(60, 100, "MRN 1234", 18)])
    for index in (4, 5):
        frames[index][mask] = 255
    reads = plan_reads(frames)
    assert len(reads) == 2
    composite = reads[1]
    assert composite.support is not None
    assert composite.image[mask].min() == 255
    ys, xs = np.nonzero(mask)
    covered = composite.frames_for(
        int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    )
    assert covered == frozenset({4, 5})


def test_apply_fills_boxes_only() -> None:
    frames = np.arange(2 * 20 * 30, dtype=np.int16).reshape(2, 20, 30)
    out = apply(frames, [Redaction(Box(2, 3, 10, 8), BoxSource.OCR, frozenset({1}))], [], -1)
    changed = out != frames
    assert changed[1, 3:8, 2:10].all() and changed.sum() == 5 * 8
    assert not changed[0].any()


def test_apply_keep_regions_fill_outside() -> None:
    frames = np.ones((1, 10, 10, 3), dtype=np.uint8)
    out = apply(frames, [], [Box(2, 2, 8, 8)], 0)
    assert (out[0, 2:8, 2:8] == 1).all() and out.sum() == 36 * 3


# ------------------------------------------------------------------ regions


def test_profile_regions_match_and_validate() -> None:
    rules = RegionRules(
        [{"match": {"Manufacturer": "siemens", "Rows": 768}, "boxes": [[0, 0, 1024, 60]]}],
        deid_filters=False,
    )
    ds = _ds(Manufacturer="SIEMENS", Rows=768)
    assert [b for b, _ in rules.regions(ds).redact] == [Box(0, 0, 1024, 60)]
    assert rules.regions(_ds(Manufacturer="GE", Rows=768)).empty
    with pytest.raises(ConfigurationError):
        RegionRules([{"boxes": [[0, 0, 0, 10]]}], deid_filters=False)
    with pytest.raises(ConfigurationError):
        RegionRules([{"match": {}, "colour": "red"}], deid_filters=False)


def test_deid_filters_give_vendor_regions_for_real_ultrasound() -> None:
    from tests.pixel_fixtures import _deid_data

    ds = _deid_data("ultrasounds/RGB_IMAGE.dcm")
    found = RegionRules([], deid_filters=True).regions(ds)
    assert (Box(0, 0, 1024, 60), BoxSource.DEID_FILTER) in found.redact


def test_deid_coordinates_resolved_from_one_header_do_not_leak_into_the_next() -> None:
    """deid writes "from:" coordinates it resolves into the recipe: the per-thread copy is put
    back after each call, so each instance gets its own regions, and a copy is made once."""
    from deid.config import DeidRecipe
    from deid.dicom.pixels.detect import has_burned_pixels

    from gateway.pixels.regions import _RecipeCopy
    from tests.pixel_fixtures import _deid_data

    recipe = _RecipeCopy(DeidRecipe("dicom.ultrasound"))  # keepcoordinates from:SequenceOf...
    assert recipe._resolved
    first = _deid_data("ultrasounds/GREYSCALE_IMAGE.dcm")
    second = _deid_data("ultrasounds/GREYSCALE_IMAGE.dcm")
    region = second.SequenceOfUltrasoundRegions[0]
    region.RegionLocationMinX0, region.RegionLocationMaxX1 = 100, 200

    def resolved(ds: pydicom.Dataset) -> list[object]:
        result = has_burned_pixels(ds, deid=recipe.recipe)
        found = [c[1] for item in result["results"] for c in item["coordinates"]]
        recipe.restore()
        return found

    assert resolved(first) != resolved(second)
    assert resolved(first) == resolved(first)
    assert all(coordset[1].startswith("from:") for coordset, _ in recipe._resolved)


def test_ultrasound_regions_are_inclusive_boxes() -> None:
    from tests.pixel_fixtures import _deid_data

    ds = _deid_data("ultrasounds/GREYSCALE_IMAGE.dcm")
    assert ultrasound_regions(ds) == [Box(14, 38, 1011, 759)]


# ------------------------------------------------------------------ codec

CODEC_CASES = [
    ("CT_small.dcm", "MONOCHROME2"),
    ("MR_small_RLE.dcm", "MONOCHROME2"),
    ("MR_small_bigendian.dcm", "MONOCHROME2"),
    ("MR_small_jp2klossless.dcm", "MONOCHROME2"),
    ("JPEG-LL.dcm", "MONOCHROME2"),
    ("emri_small_RLE.dcm", "MONOCHROME2"),
    ("US1_J2KR.dcm", "RGB"),  # YBR_RCT
    ("GDCMJ2K_TextGBR.dcm", "RGB"),  # YBR_RCT
    ("SC_rgb_jpeg_dcmtk.dcm", "RGB"),  # YBR_FULL, lossy
    ("SC_ybr_full_uncompressed.dcm", "RGB"),
    ("SC_ybr_full_422_uncompressed.dcm", "RGB"),
    ("SC_rgb_rle.dcm", "RGB"),
    ("SC_rgb_expb.dcm", "RGB"),
    ("SC_rgb_16bit.dcm", "RGB"),
    ("SC_rgb_2frame.dcm", "RGB"),
    ("OBXXXX1A.dcm", "PALETTE COLOR"),
    ("image_dfl.dcm", "MONOCHROME2"),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "MONOCHROME2"),
    ("color3d_jpeg_baseline.dcm", "RGB"),  # YBR_FULL_422, 120 frames
]


SMALL_CASES = [(n, p) for n, p in CODEC_CASES if n != "color3d_jpeg_baseline.dcm"]
CODEC_MATRIX = (
    [(n, p, OutputEncoding.EXPLICIT_VR_LITTLE_ENDIAN) for n, p in CODEC_CASES]
    + [(n, p, OutputEncoding.RLE_LOSSLESS) for n, p in SMALL_CASES]
    + [(n, p, OutputEncoding.JPEG2000_LOSSLESS) for n, p in SMALL_CASES]
)


@pytest.mark.parametrize(("name", "photometric", "encoding"), CODEC_MATRIX)
def test_codec_round_trip_is_lossless(
    name: str, photometric: str, encoding: OutputEncoding
) -> None:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip("sample not shipped by this pydicom")
    ds = pydicom.dcmread(path)
    lossy_in = (
        ds.file_meta.TransferSyntaxUID.is_compressed
        and "Baseline" in ds.file_meta.TransferSyntaxUID.name
    )
    pixels = decode(ds)
    syntax = write(ds, pixels, pixels.frames, encoding)
    reread = pydicom.dcmread(_save(ds))
    again = decode(reread)
    assert np.array_equal(again.frames, pixels.frames)
    assert reread.PhotometricInterpretation == photometric
    assert reread.file_meta.TransferSyntaxUID == syntax
    assert not reread.file_meta.TransferSyntaxUID.name.startswith("JPEG Baseline")
    if pixels.samples > 1:
        assert reread.PlanarConfiguration == 0
    if lossy_in:
        assert reread.LossyImageCompression == "01"


def _save(ds: pydicom.Dataset) -> object:
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def test_undecodable_pixels_quarantine_without_values() -> None:
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    ds.PixelData = b"\x01\x00\x00\x00" + b"\xff" * 60
    ds.PatientName = "DOE^JOHN"
    with pytest.raises(QuarantineError) as caught:
        decode(ds)
    assert caught.value.reason is ReasonCode.PIXEL_DECODE_FAILED
    assert "DOE" not in str(caught.value)


def test_ner_finds_names_not_in_the_header() -> None:
    from gateway.pixels.stage import build_registry
    from gateway.text.presidio_recognizer import PresidioRecognizer

    if not PresidioRecognizer().is_available():
        pytest.skip(f"Presidio unavailable: {PresidioRecognizer().missing_dependency()}")
    classifier = OcrPhiClassifier(TextMode.SENSITIVE_ONLY, build_registry(PixelSettings(ner=True)))
    found = classifier.find(
        [_segment("Seen", "by", "Dr.", "Alice", "Smith"), _segment("TIS", "0.5")], PhiContext()
    )
    assert [f.entities for f in found] == [("PERSON",)]


def test_ocr_failure_quarantines() -> None:
    from gateway.pixels.ocr import OcrFailed

    class Broken:
        name = "broken"

        def is_available(self) -> bool:
            return True

        def missing_dependency(self) -> str | None:
            return None

        def read(self, image: object, psm: object = None) -> list[Word]:
            raise OcrFailed("exit 1")

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    every_image = PixelExamineRule(policy=ExaminePolicy.ALL)  # CT_small has no text to triage
    stage = PixelStage(PixelSettings(examine=every_image, deid_filters=False), engine=Broken())
    with pytest.raises(QuarantineError) as caught:
        stage.clean(ds, PhiContext())
    assert caught.value.reason is ReasonCode.PIXEL_CLEANER_UNAVAILABLE


def test_stage_pickles_for_worker_pools() -> None:
    import pickle

    stage = PixelStage(PixelSettings())
    copy = pickle.loads(pickle.dumps(stage))
    assert type(copy.engine) is type(stage.engine)
    assert copy.needs_examination(_ds(Modality="US"))
