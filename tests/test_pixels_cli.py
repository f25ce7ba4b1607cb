"""Through ``deid-gateway deidentify``: burned-in PHI is gone from the delivered pixels and the
header says so (BurnedInAnnotation NO, 113101 Clean Pixel Data Option)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from gateway.cli.main import main
from tests import pixel_fixtures as fx

pytestmark = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="tesseract-ocr is not installed"
)
CASES = ("us-grey-real", "us-rgb-real-j2k", "us-rgb-ybr-full-422-jpeg", "us-palette")


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pydicom.Dataset]:
    source = tmp_path_factory.mktemp("in")
    for name in CASES:
        fx.build(name).fresh().save_as(source / f"{name}.dcm", enforce_file_format=True)
    out = tmp_path_factory.mktemp("out")
    code = main(
        [
            "deidentify",
            "--quiet",
            "--input",
            str(source),
            "--output",
            str(out),
            "--profile",
            "research",
        ]
    )
    assert code == 0
    found: dict[str, pydicom.Dataset] = {}
    for path in Path(out).rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        found[_which(ds)] = ds
    return found


def _shape(ds: pydicom.Dataset) -> tuple[int, int, int, bool]:
    palette = str(ds.PhotometricInterpretation) == "PALETTE COLOR"
    return int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel), palette


def _which(ds: pydicom.Dataset) -> str:
    """UIDs are replaced on the way out: the cases differ by their image geometry."""
    for name in CASES:
        if _shape(fx.build(name).dataset) == _shape(ds):
            return name
    raise AssertionError("an output that matches no input")


def test_every_case_is_delivered(delivered: dict[str, pydicom.Dataset]) -> None:
    assert len(delivered) == len(CASES)


@pytest.mark.parametrize("name", CASES)
def test_delivered_pixels_carry_no_phi_and_are_marked(
    delivered: dict[str, pydicom.Dataset], name: str
) -> None:
    ds = delivered[name]
    case = fx.build(name)
    words = fx.read_words(ds)
    assert [t for t in case.phi_tokens if fx.token_read(t, words)] == []
    assert ds.get("BurnedInAnnotation") == "NO"
    codes = {str(item.CodeValue) for item in ds.get("DeidentificationMethodCodeSequence", [])}
    assert "113101" in codes
