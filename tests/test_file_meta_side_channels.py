"""File meta side channels: AE titles, network addresses and the private meta block name devices
and sites. Every profile removes them unless it retains device identity."""

from __future__ import annotations

import csv
from pathlib import Path

import pydicom
import pytest

from gateway.cli.main import main
from tests.dicom_fixtures import Patient, write_study
from tests.test_dicom_options import profile_with

PATIENT = Patient()
# keyword -> a value as a sending modality / PACS writes it
SIDE_CHANNELS: dict[str, object] = {
    "SourceApplicationEntityTitle": "STMERCY_CT7",
    "SendingApplicationEntityTitle": "STMERCY_PACS",
    "ReceivingApplicationEntityTitle": "RESEARCH_GW",
    "SourcePresentationAddress": "dicom://10.41.7.23:104",
    "SendingPresentationAddress": "dicom://pacs.stmercy.example:11112",
    "ReceivingPresentationAddress": "dicom://10.41.9.2:4242",
    "PrivateInformationCreatorUID": "1.2.826.0.1.3680043.10.1234.4471",
    "PrivateInformation": b"STMERCY NODE 7 ROOM 2\x00",
}


def write_input(folder: Path) -> None:
    (path,) = write_study(folder, PATIENT, sources=("CT_small.dcm",))
    ds = pydicom.dcmread(path)
    for keyword, value in SIDE_CHANNELS.items():
        setattr(ds.file_meta, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    assert all(k in pydicom.dcmread(path).file_meta for k in SIDE_CHANNELS)  # the fixture holds


def deidentify(tmp_path: Path, profile: str) -> pydicom.Dataset:
    write_input(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["deidentify", "--quiet", "--input", str(tmp_path / "in"), "--output", str(out),
                 "--profile", profile])
    assert code == 0
    (written,) = list(out.rglob("*.dcm"))
    return pydicom.dcmread(written)


@pytest.mark.parametrize("profile", ["basic", "research", "safe-harbor"])
def test_every_profile_removes_file_meta_side_channels(profile: str, tmp_path: Path) -> None:
    ds = deidentify(tmp_path, profile)
    left = [k for k in SIDE_CHANNELS if k in ds.file_meta]
    assert not left, left
    raw = next(iter((tmp_path / "out").rglob("*.dcm"))).read_bytes()
    for value in SIDE_CHANNELS.values():
        needle = value if isinstance(value, bytes) else str(value).encode()
        assert needle.rstrip(b"\x00") not in raw
    assert ds.file_meta.TransferSyntaxUID  # the rest of the meta is intact
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_retain_device_identity_keeps_them(tmp_path: Path) -> None:
    """All but the Source AE Title: it names the writer of the file, and the gateway wrote it."""
    profile = profile_with(tmp_path, ["retain_device_identity"])
    ds = deidentify(tmp_path, str(profile))
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    for keyword, value in SIDE_CHANNELS.items():
        if keyword != "SourceApplicationEntityTitle":
            assert ds.file_meta[keyword].value == value, keyword


def test_explain_lists_the_file_meta_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "explain", "research", "--format", "csv"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    for keyword in SIDE_CHANNELS:
        (row,) = [r for r in rows if keyword in r]
        assert "remove" in row and any("device or network" in cell for cell in row)
