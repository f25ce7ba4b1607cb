"""Issue 18: a redaction covers the whole value it found, never part of it.

Large burned-in text (60-100 px high on 512-1024 px real sample images), dates in the common
written forms, checked glyph by glyph against the boxes PIL drew them in, and re-read line by
line afterwards for any part of a value (each date component, each name token, three digits of
an ID in a row). Needs tesseract (Debian ``tesseract-ocr``).
"""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pytest

from gateway.errors import QuarantineError, ReasonCode
from gateway.pixels import PixelStage
from gateway.pixels.detect import PAD_FRACTION, span_box
from gateway.pixels.libtesseract import LibTesseractEngine
from gateway.pixels.model import Box, BoxSource, Redaction, Word
from gateway.pixels.ocr import PageSegMode, TesseractEngine
from gateway.pixels.parts import ValueParts
from gateway.pixels.regions import RegionRules
from gateway.pixels.reread import reread_lines
from gateway.profiles.model import PixelSettings
from gateway.text import PhiContext
from tests import pixel_fixtures as fx

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="tesseract-ocr is not installed"
)
STAGE: list[PixelStage] = []


def stage() -> PixelStage:
    if not STAGE:
        STAGE.append(PixelStage(PixelSettings()))
    return STAGE[0]


def _changed(out: np.ndarray, original: np.ndarray) -> np.ndarray:
    changed: np.ndarray = np.any(out != original, axis=-1) if out.ndim == 4 else out != original
    return changed


@needs_tesseract
@pytest.mark.parametrize("name", list(fx.LARGE_BUILDERS))
def test_every_glyph_of_large_phi_is_covered_and_no_part_is_read(name: str) -> None:
    case = fx.build(name)
    heights = [y1 - y0 for _, y0, y1 in fx.value_lines(case)]
    assert all(60 <= h <= 100 for h in heights), heights  # fixture: the sizes the issue names
    assert 500 <= max(case.dataset.Rows, case.dataset.Columns) <= 1024
    before = fx.words_on_value_lines(case.fresh(), case)
    assert fx.parts_read(case, before), "fixture sanity: OCR reads the values before cleaning"
    located = fx.read_located(case.fresh())
    vendor = RegionRules([], deid_filters=True).regions(case.fresh()).redact
    technical = [
        w
        for token in case.technical_tokens
        for _, w in fx.token_boxes(token, located)
        if not any(_overlap(w.box, box) for box, _ in vendor)
    ]
    assert len(technical) >= len(case.technical_tokens)  # fixture: they are read before

    ds = case.fresh()
    original = fx.decoded(case.fresh())
    report = stage().clean(ds, case.context)

    assert report.cleaned and report.verified
    out = fx.decoded(ds)
    changed = _changed(out, original)
    fill = out[changed][0]
    assert fx.glyphs_uncovered(case, out, fill) == []
    assert fx.parts_read(case, fx.words_on_value_lines(ds, case)) == []
    for word in technical:
        b = word.box
        assert not changed[0, b.y0 : b.y1, b.x0 : b.x1].any(), "technical text redacted"


def _overlap(a: Box, b: Box) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


# ------------------------------------------------------------------ verification alone


@needs_tesseract
def test_reread_finds_month_and_year_left_by_a_short_box_and_widens_over_them() -> None:
    """The issue's case: the box covered ``DOB 12/0``; month and year stayed readable."""
    case = fx.build("large-us-dob-dmy")
    grey = fx.decoded(case.fresh())[:1].copy()
    glyphs = case.glyphs
    short = glyphs[:6]  # D O B 1 2 /
    top = min(g.box.y0 for g in glyphs)
    bottom = max(g.box.y1 for g in glyphs)
    pad = int((bottom - top) * PAD_FRACTION)
    box = Box(short[0].box.x0 - pad, top - pad, max(g.box.x1 for g in short) + pad, bottom + pad)
    grey[0, box.y0 : box.y1, box.x0 : box.x1] = 0
    engine = LibTesseractEngine() if LibTesseractEngine.is_available() else TesseractEngine()

    found = reread_lines(grey, [Redaction(box, BoxSource.OCR)], engine, _parts())

    assert found.segments > 0 and "DATE_TIME" in found.entities
    right = max(r.box.x1 for r in found.redactions)
    assert right >= max(g.box.x1 for g in glyphs)  # to the last glyph of the year
    assert all(r.box.x0 <= box.x0 and r.box.y0 <= box.y0 for r in found.redactions)


def _parts() -> ValueParts:
    context = PhiContext()
    context.add_name("DOE^JOHN")
    context.add_identifier("48213377")
    context.add_date(dt.date(1961, 3, 12))
    return ValueParts.from_context(context)


class _PartEngine:
    """Detection reads the whole date; every line re-read still reads its year."""

    name = "stub"

    def is_available(self) -> bool:
        return True

    def missing_dependency(self) -> str | None:
        return None

    def read(self, image: object, psm: PageSegMode | None = None) -> list[Word]:
        if psm is None:
            return [
                Word("DOB", Box(20, 20, 60, 40), 95.0),
                Word("12/03/1961", Box(66, 20, 160, 40), 95.0),
            ]
        return [Word("1961", Box(16, 16, 40, 30), 95.0)]


def test_a_part_still_read_after_the_last_round_quarantines() -> None:
    case = fx.build("ct-int16-rle")
    context = PhiContext()
    context.add_date(dt.date(1961, 3, 12))
    pixel_stage = PixelStage(PixelSettings(deid_filters=False), engine=_PartEngine())
    with pytest.raises(QuarantineError) as caught:
        pixel_stage.clean(case.fresh(), context)
    assert caught.value.reason is ReasonCode.PIXEL_PHI_REMAINS
    assert "1961" not in str(caught.value)


# ------------------------------------------------------------------ units

PART_CASES = [
    ("/03/1961.", "DATE_TIME"),
    ("12,", "DATE_TIME"),
    ("196%", "DATE_TIME"),  # three digits of the year
    ("March", "DATE_TIME"),
    ("MAR.", "DATE_TIME"),
    ("JOHN.", "PERSON"),
    ("D0E", "PERSON"),  # 0 read for O
    ("MRN@4821", "ID"),
    ("x133y", "ID"),  # "133" of 48213377
    ("l96l", "DATE_TIME"),  # l read for 1
    ("16cm", None),
    ("Low", None),
    ("HPen", None),
    ("2.0", None),
    ("64%", None),
    ("3.3", None),  # a lone digit inside a number is not a month
    ("cm", None),
]


@pytest.mark.parametrize(("text", "entity"), PART_CASES)
def test_value_parts(text: str, entity: str | None) -> None:
    assert _parts().found_in(text) == entity


def test_a_lone_digit_counts_only_when_ocr_is_sure() -> None:
    parts = _parts()
    assert parts.found_in("3", 90.0) == "DATE_TIME"  # the month
    assert parts.found_in("3", 20.0) is None


def test_span_covers_first_to_last_word_with_a_median_margin_rounded_outwards() -> None:
    words = (Box(10, 10, 40, 30), Box(44, 8, 60, 30), Box(90, 12, 130, 31))  # "12" "/03" "1961"
    swollen = (*words, Box(140, 0, 170, 90))  # a caliper line touching the last glyph
    # hull (10, 8, 130, 31), margin ceil(0.3 x 20) = 6, halved: floor for starts, ceil for ends
    assert span_box(words, 2.0) == Box(2, 1, 68, 19)
    assert span_box(swollen, 1.0).x0 == 10 - 6  # ceil(0.3 x 20): the median, not 0.3 x 90
