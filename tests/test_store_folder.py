"""The folder store: atomic writes, and what a killed writer leaves behind is cleaned up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.stores import folder
from gateway.stores.folder import FolderStore, dicom_relpath


def _aged(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_first_write_into_a_folder_removes_stale_temporary_files_only(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    store = FolderStore(tmp_path / "store")
    series = store.root / dicom_relpath(ds).parent
    series.mkdir(parents=True)
    stale = series / ".tmp-999-1-1.2.3.dcm.part"  # a writer killed an hour ago
    live = series / ".tmp-998-1-1.2.4.dcm.part"  # another process writing right now
    data = series / "1.2.5.dcm"  # data is never touched, however old
    for path in (stale, live, data):
        path.write_bytes(b"x")
    _aged(stale, 2 * folder.STALE_PART_SECONDS)
    _aged(data, 2 * folder.STALE_PART_SECONDS)
    folder._MADE_DIRS.discard(series)  # as in a new process

    relpath = store.put_dicom(ds)

    assert not stale.exists()
    assert live.exists() and data.exists()
    assert (store.root / relpath).is_file()
    assert not [p for p in series.iterdir() if p.name.startswith(".tmp-") and p != live]


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.dcm"

    def explode(fh: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        folder.atomic_write(target, explode)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
