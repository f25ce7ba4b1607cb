"""Files without preamble and file meta (bare datasets, as old archives hold) are read in the
encoding they were written in and written out as proper Part 10 files, not quarantined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.cli.main import main
from gateway.dicom.reader import read_dicom
from gateway.errors import QuarantineError, ReasonCode

# (sample, implicit VR, little endian, transfer syntax the reader must find)
CASES = [
    ("CT_small.dcm", True, True, ImplicitVRLittleEndian),
    ("CT_small.dcm", False, True, ExplicitVRLittleEndian),
    ("MR_small.dcm", True, True, ImplicitVRLittleEndian),
    ("rtplan.dcm", False, True, ExplicitVRLittleEndian),
    ("MR_small_bigendian.dcm", False, False, ExplicitVRBigEndian),
]


def bare(source: str, implicit: bool, little: bool) -> bytes:
    """The dataset of a real sample alone: no preamble, no "DICM", no group 0002."""
    ds = pydicom.dcmread(get_testdata_file(source))
    for _ in ds.iterall():  # every element decoded: written anew in the chosen encoding
        pass
    if not little and "PixelData" in ds and ds.original_encoding[1]:
        raise AssertionError("a little-endian source would need its pixels swapped")
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    assert data[128:132] != b"DICM" and b"\x02\x00\x10\x00" not in data[:8]
    return data


@pytest.mark.parametrize(("source", "implicit", "little", "syntax"), CASES)
def test_reader_detects_the_encoding_and_writes_file_meta(
    source: str, implicit: bool, little: bool, syntax: str, tmp_path: Path
) -> None:
    path = tmp_path / "bare"
    path.write_bytes(bare(source, implicit, little))
    ds = read_dicom(path)
    original = pydicom.dcmread(get_testdata_file(source))
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert ds.PatientName == original.PatientName


@pytest.mark.parametrize(("source", "implicit", "little", "syntax"), CASES)
def test_cli_deidentifies_bare_datasets(
    source: str, implicit: bool, little: bool, syntax: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "IM0001").write_bytes(bare(source, implicit, little))  # no extension, as archives
    out, quarantine = tmp_path / "out", tmp_path / "q"
    code = main(["deidentify", "--input", str(folder), "--output", str(out),
                 "--quarantine", str(quarantine), "--profile", "research"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert not list(quarantine.glob("*.reason.json"))
    (written,) = list(out.rglob("*.dcm"))
    assert written.read_bytes()[128:132] == b"DICM"  # a proper Part 10 file
    result = pydicom.dcmread(written)  # no force needed
    original = pydicom.dcmread(get_testdata_file(source))
    assert result.file_meta.TransferSyntaxUID == syntax
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    assert result.SOPInstanceUID != original.SOPInstanceUID
    assert result.PatientIdentityRemoved == "YES"
    if "PixelData" in original:
        assert np.array_equal(result.pixel_array, original.pixel_array)


def test_bare_dataset_with_compressed_pixels_is_quarantined(tmp_path: Path) -> None:
    """Encapsulated pixel data says nothing of its codec: without a transfer syntax nobody can
    decode it (or clean it), so it stays out, with its reason."""
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    write_dataset(buffer, ds)
    path = tmp_path / "bare"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(QuarantineError) as caught:
        read_dicom(path)
    assert caught.value.reason is ReasonCode.MISSING_META


def test_text_is_still_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Patient HOLLOWAY seen on 2024-09-17\n" * 20)
    with pytest.raises(QuarantineError) as caught:
        read_dicom(path)
    assert caught.value.reason is ReasonCode.NOT_DICOM
