"""The local folder research store: a layout that carries no PHI, written atomically.

DICOM: ``<patient pseudonym>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` —
every path component is a pseudonym or a remapped UID. FHIR: NDJSON parts per resource type,
``fhir/<Type>/<part>.ndjson``, the part named by a hash of the resource ids it holds. Writing
the same data twice replaces it with identical bytes, so forwarding is idempotent. The CLI's
output folder and the service's folder store are this one layout.

A folder that cannot be written (disk full, read-only, no permission) is the store being
unavailable, never a fault of the data: :class:`StoreUnavailable`, retried by the service.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset

from gateway.dicom import tags as T
from gateway.dicom.values import read_values
from gateway.dicom.writer import write_part10
from gateway.errors import ConflictingInstance, DuplicateInstance, StoreUnavailable


def dicom_relpath(ds: Dataset) -> Path:
    parts = [
        _value(ds, T.PATIENT_ID, "LO") or "unknown-patient",
        _value(ds, T.STUDY_INSTANCE_UID, "UI") or "unknown-study",
        _value(ds, T.SERIES_INSTANCE_UID, "UI") or "unknown-series",
        f"{_value(ds, T.SOP_INSTANCE_UID, 'UI')}.dcm",
    ]
    safe = [p.replace("/", "_").replace("\\", "_").strip() or "_" for p in parts]
    return Path(*safe)


def _value(ds: Dataset, tag: int, vr: str) -> str:
    return "\\".join(read_values(ds, tag, vr))


def _write(data: bytes, fh: BinaryIO) -> None:
    fh.write(data)


_MADE_DIRS: set[Path] = set()
STALE_PART_SECONDS = 3600.0  # no single write takes an hour: such a temporary file is orphaned


def atomic_write(path: Path, write: Callable[[BinaryIO], object], exclusive: bool = False) -> None:
    """Write to a temporary name beside ``path``, then rename: readers never see half a file.
    Folders made once are remembered (one mkdir per study/series, not per instance); the
    first visit also removes what a killed writer left there.

    ``exclusive``: never replace an existing ``path`` (a hard link, which fails when the name
    exists, instead of a rename): the same bytes raise :class:`DuplicateInstance`, other
    bytes :class:`ConflictingInstance`."""
    parent = path.parent
    if parent not in _MADE_DIRS:
        parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_parts(parent)
        if len(_MADE_DIRS) > 100_000:
            _MADE_DIRS.clear()
        _MADE_DIRS.add(parent)
    # hidden and not ending in .dcm/.ndjson: a write cut short by a kill is never taken for data
    tmp = parent / f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}.part"
    try:
        try:
            fh = open(tmp, "wb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:  # the folder went away behind our back
            parent.mkdir(parents=True, exist_ok=True)
            fh = open(tmp, "wb")  # noqa: SIM115 - closed by the with below
        with fh:
            write(fh)
        if not exclusive:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            same = filecmp.cmp(tmp, path, shallow=False)
            raise (DuplicateInstance() if same else ConflictingInstance()) from None
        finally:
            tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sweep_stale_parts(folder: Path, older_than: float = STALE_PART_SECONDS) -> int:
    """Remove temporary files (``.tmp-*.part``) older than ``older_than`` seconds: a writer
    killed mid-write leaves one behind. Younger ones may belong to a live writer (another
    process writing into the same series) and stay."""
    removed = 0
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".tmp-") and entry.name.endswith(".part")):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue  # its writer finished or another sweeper was first
    return removed


#: errno values that say the destination folder, not the data, is at fault
UNAVAILABLE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)


def _unavailable(exc: OSError) -> StoreUnavailable:
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return StoreUnavailable(f"the folder store cannot be written ({name})")


class FolderStore:
    """Local research store rooted at ``root``. ``exclusive`` (the service's stores): an
    instance already stored is never replaced; the same bytes again are a duplicate, other
    bytes under the same UIDs a conflicting instance. A directory run decides collisions
    itself, in path order (``gateway.intake.instances``), and replaces."""

    def __init__(self, root: Path, name: str = "folder", exclusive: bool = False) -> None:
        self.root = Path(root)
        self.name = name
        self.exclusive = exclusive

    def put_fhir(self, resources: list[dict[str, Any]]) -> list[str]:
        by_type: dict[str, list[dict[str, Any]]] = {}
        for resource in resources:
            by_type.setdefault(str(resource.get("resourceType")), []).append(resource)
        refs = []
        for resource_type, items in sorted(by_type.items()):
            ids = sorted(f"{resource_type}/{r.get('id', '')}" for r in items)
            part = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24]
            lines = (json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in items)
            body = "".join(lines).encode()
            try:
                atomic_write(
                    self.root / "fhir" / resource_type / f"{part}.ndjson", partial(_write, body)
                )
            except OSError as exc:
                if exc.errno in UNAVAILABLE_ERRNOS:
                    raise _unavailable(exc) from None
                raise
            refs.extend(ids)
        return refs

    def put_manifest(self, delivery: str, manifest: dict[str, Any]) -> None:
        """``manifests/<delivery>.json``: the receipt of one delivery (no PHI)."""
        body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
        atomic_write(self.root / "manifests" / f"{delivery}.json", partial(_write, body))

    def put_dicom(self, ds: Dataset) -> str:
        relpath = dicom_relpath(ds)
        try:
            atomic_write(self.root / relpath, partial(write_part10, ds=ds), self.exclusive)
        except OSError as exc:
            if exc.errno in UNAVAILABLE_ERRNOS:
                raise _unavailable(exc) from None
            raise
        return str(relpath)


class BufferedFhirStore:
    """Collects ``put_fhir`` calls and writes them as one part per type on :meth:`flush`: a
    directory run writes the good lines of an NDJSON chunk together instead of a file each."""

    def __init__(self, inner: FolderStore) -> None:
        self.inner = inner
        self.name = inner.name
        self._pending: list[dict[str, Any]] = []

    def put_fhir(self, resources: list[dict[str, Any]]) -> list[str]:
        self._pending.extend(resources)
        return [f"{r.get('resourceType')}/{r.get('id', '')}" for r in resources]

    def put_dicom(self, ds: Dataset) -> str:
        return self.inner.put_dicom(ds)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self.inner.put_fhir(pending)
