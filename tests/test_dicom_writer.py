"""The Part 10 writer copies unchanged elements as read and must write exactly what
pydicom.dcmwrite(enforce_file_format=True) writes: the oracle is pydicom itself."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from gateway.dicom import writer
from gateway.dicom.reader import read_dicom
from gateway.errors import DeidError
from gateway.intake.directory import iter_files
from gateway.linkage.context import Linkage
from gateway.linkage.keys import KeyRing
from gateway.pipeline.dicom_stages import DicomProcessor
from gateway.profiles.loader import load_profile

TEST_FILES = Path(os.path.dirname(get_testdata_file("CT_small.dcm")))


def _processor(name: str) -> DicomProcessor:
    profile = load_profile(name)
    return DicomProcessor(profile, Linkage.from_profile(profile, KeyRing()))


def _pair(path: Path, processor: DicomProcessor | None) -> tuple[Dataset, Dataset] | None:
    """The same file read (and de-identified) twice: one copy per writer."""
    try:
        a, b = read_dicom(path), read_dicom(path)
        if processor is not None:
            processor.process(a)
            processor.process(b)
    except DeidError:
        return None
    return a, b


def _dcmwrite(ds: Dataset) -> bytes | type[Exception]:
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 - the oracle refuses: ours must refuse the same way
        return type(exc)
    return buffer.getvalue()


def _ours(ds: Dataset) -> bytes | type[Exception]:
    try:
        return writer.encode_part10(ds)
    except Exception as exc:  # noqa: BLE001 - compared with the oracle's refusal
        return type(exc)


@pytest.mark.parametrize("profile", [None, "basic"])
def test_output_is_byte_identical_to_dcmwrite_over_pydicom_test_files(profile: str | None) -> None:
    processor = _processor(profile) if profile else None
    compared = fast = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in iter_files([TEST_FILES]):
            pair = _pair(path, processor)
            if pair is None:
                continue
            ours, theirs = _ours(pair[0]), _dcmwrite(pair[1])
            assert ours == theirs, path.name
            compared += 1
            try:
                writer._plan(pair[0])
                fast += 1
            except writer._Fallback:
                pass
    assert compared >= 100
    assert fast >= 0.85 * compared  # the fast path is the rule, not the exception


def test_deferred_pixel_data_is_streamed_from_the_source(tmp_path: Path) -> None:
    """A value above the reader's defer size stays on disk until written, and is copied in
    chunks: the written file holds the very same pixel bytes."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PixelData = bytes(range(256)) * 4096  # 1 MiB: above the defer size
    ds.Rows, ds.Columns = 512, 1024
    source = tmp_path / "big.dcm"
    ds.save_as(source, enforce_file_format=True)
    read = read_dicom(source)
    assert read.get_item(0x7FE00010, keep_deferred=True).value is None  # deferred, not in memory
    ours = writer.encode_part10(read)
    assert ours == _dcmwrite(read_dicom(source))
    assert pydicom.dcmread(io.BytesIO(ours)).PixelData == ds.PixelData


def test_a_source_cut_short_after_reading_fails_instead_of_writing_short(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PixelData = b"\x01\x02" * (512 * 512)
    ds.Rows = ds.Columns = 512
    source = tmp_path / "big.dcm"
    ds.save_as(source, enforce_file_format=True)
    read = read_dicom(source)
    stat = source.stat()
    with open(source, "r+b") as fh:
        fh.truncate(stat.st_size - 1000)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    with pytest.raises(EOFError):
        writer.encode_part10(read)
    source.write_bytes(source.read_bytes() + b"\0" * 1000)  # changed: refused
    with pytest.raises(OSError, match="changed"):
        writer.encode_part10(read)


def test_changed_values_are_encoded_like_pydicom() -> None:
    """The writer's own encoding of simple changed values (ASCII, text, UI padding, empty)."""
    ds = read_dicom(Path(get_testdata_file("CT_small.dcm")))
    ds.PatientName = None
    ds.PatientID = "ABC"  # odd length: space padded
    ds.StudyInstanceUID = "2.25.123"  # odd length: NUL padded
    ds.StudyDescription = "Thorax ÄÖ"  # not ASCII: pydicom's encoder
    ds.ImageComments = "a\\b"  # backslash: pydicom's encoder
    ds.AccessionNumber = ""
    ds.add_new(0x00081030, "LO", "Head")
    ds.DeidentificationMethodCodeSequence = [Dataset()]
    ds.DeidentificationMethodCodeSequence[0].CodeValue = "113100"
    writer._plan(ds)  # on the fast path
    ours = writer.encode_part10(ds)  # first: dcmwrite converts PixelData in place
    assert ours == _dcmwrite(ds)


def test_big_endian_is_handed_to_pydicom() -> None:
    ds = read_dicom(Path(get_testdata_file("MR_small_bigendian.dcm")))
    with pytest.raises(writer._Fallback):
        writer._plan(ds)
    assert writer.encode_part10(ds) == _dcmwrite(read_dicom(Path(get_testdata_file("MR_small_bigendian.dcm"))))


@pytest.mark.parametrize("big_pixels", [False, True], ids=["in-memory", "deferred"])
def test_a_file_cut_inside_any_value_is_refused_as_truncated(big_pixels: bool, tmp_path: Path) -> None:
    """The reader checks only the element read last (the reader stops at the end of the file):
    cutting the file anywhere inside a value, header elements or pixel data, must be caught."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if big_pixels:
        ds.PixelData = b"\x01\x02" * (512 * 512)
        ds.Rows = ds.Columns = 512
    whole = tmp_path / "whole.dcm"
    ds.save_as(whole, enforce_file_format=True)
    data = whole.read_bytes()
    read = pydicom.dcmread(whole, defer_size="256 KB")
    cuts = []
    for tag in read.keys():
        raw = read.get_item(tag, keep_deferred=True)
        if isinstance(raw, pydicom.dataelem.RawDataElement) and raw.length > 1:
            cuts.append(raw.value_tell + raw.length // 2)  # inside this value
    assert len(cuts) > 30
    for cut in cuts:
        short = tmp_path / "short.dcm"
        short.write_bytes(data[:cut])
        with pytest.raises(DeidError) as caught:
            read_dicom(short)
        assert caught.value.reason.value in ("truncated", "undecodable-value"), cut


def test_a_big_instance_passes_through_without_its_pixel_data_in_memory(tmp_path: Path) -> None:
    """Header path: 64 MiB of pixel data are streamed from input to output; the process never
    holds them (tracemalloc's peak stays a small fraction of the pixel data)."""
    import tracemalloc

    from gateway.intake import directory
    from gateway.pipeline.outcome import Status

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    frames = 128
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = 512
    pixels = (bytes(range(256)) * 2048) * frames  # 512 x 512 x 2 bytes per frame
    ds.PixelData = pixels
    source = tmp_path / "in" / "big.dcm"
    source.parent.mkdir()
    ds.save_as(source, enforce_file_format=True)
    del ds
    config = directory.RunConfig(load_profile("basic"), tmp_path / "out", tmp_path / "q", None)
    directory.init_worker(config)

    tracemalloc.start()
    done = directory.run_dicom_file(source)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert done.outcome.status is Status.FORWARDED, done
    assert peak < len(pixels) / 16, f"peak {peak} bytes for {len(pixels)} bytes of pixel data"
    written = pydicom.dcmread(tmp_path / "out" / done.outcome.refs[0])
    assert written.PixelData == pixels
    assert written.PatientIdentityRemoved == "YES"
