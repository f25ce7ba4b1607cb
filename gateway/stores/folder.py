"""The local folder research store: a layout that carries no PHI, written atomically.

DICOM: ``<patient pseudonym>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` —
every path component is a pseudonym or a remapped UID. Writing the same instance twice replaces
it with identical bytes, so forwarding is idempotent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset


def dicom_relpath(ds: Dataset) -> Path:
    parts = [
        str(ds.get("PatientID", "") or "unknown-patient"),
        str(ds.get("StudyInstanceUID", "") or "unknown-study"),
        str(ds.get("SeriesInstanceUID", "") or "unknown-series"),
        f"{ds.SOPInstanceUID}.dcm",
    ]
    safe = [p.replace("/", "_").replace("\\", "_").strip() or "_" for p in parts]
    return Path(*safe)


def atomic_write(path: Path, write: "WriteFn") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class WriteFn:  # pragma: no cover - typing helper
    def __call__(self, fh: object) -> None: ...


class FolderStore:
    """Local research store rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put_dicom(self, ds: Dataset) -> Path:
        relpath = dicom_relpath(ds)
        atomic_write(
            self.root / relpath,
            lambda fh: pydicom.dcmwrite(fh, ds, enforce_file_format=True),
        )
        return relpath
