"""The STOW-RS door reads each part's UIDs: from memory for a part up to
``IN_MEMORY_BYTES`` (no system call per element, which let request threads fight over the
GIL), from its file above that. Both give the same answer, and both refuse what is not
Part 10 DICOM."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from gateway.intake.http import dicomweb
from gateway.intake.http.multipart import Part
from tests.dicom_fixtures import Patient, phi_instance


def _part(folder: Path, data: bytes, name: str = "part-00000") -> Part:
    path = folder / name
    path.write_bytes(data)
    return Part("application/dicom", path, len(data))


def _instance_bytes() -> tuple[bytes, pydicom.Dataset]:
    ds = phi_instance("CT_small.dcm", Patient(), "study", "series", 1)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), ds


@pytest.mark.parametrize("in_memory_bytes", [dicomweb.IN_MEMORY_BYTES, 0])
def test_uids_are_read_the_same_from_memory_and_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory_bytes: int
) -> None:
    monkeypatch.setattr(dicomweb, "IN_MEMORY_BYTES", in_memory_bytes)
    data, ds = _instance_bytes()
    uids = dicomweb._uids(_part(tmp_path, data))
    assert uids is not None
    assert uids.sop_instance == ds.SOPInstanceUID
    assert uids.sop_class == ds.SOPClassUID
    assert uids.study == ds.StudyInstanceUID


@pytest.mark.parametrize("in_memory_bytes", [dicomweb.IN_MEMORY_BYTES, 0])
@pytest.mark.parametrize(
    "data",
    [b"not dicom at all" * 20, b"\0" * 128 + b"DICM" + b"\x02\x00\x10"],
    ids=["no-preamble", "truncated-meta"],
)
def test_what_is_not_part10_dicom_has_no_uids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory_bytes: int, data: bytes
) -> None:
    monkeypatch.setattr(dicomweb, "IN_MEMORY_BYTES", in_memory_bytes)
    assert dicomweb._uids(_part(tmp_path, data)) is None
