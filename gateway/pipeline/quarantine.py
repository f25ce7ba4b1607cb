"""Quarantine: what cannot be made safe is kept, with its reason, and never forwarded.

One record format (:meth:`Outcome.record` plus where the payload came from, its digest and
when) and one protocol, :class:`Quarantine`. :class:`FolderQuarantine` (the CLI) copies the
payload; :class:`SpoolQuarantine` (the service) moves the spooled payload, and the service's
item row says the same as the record file. The quarantine holds originals (PHI): folders are
0700 and files 0600; records carry reason codes, stages and value-free details only.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway.errors import ReasonCode
from gateway.pipeline.outcome import Outcome
from gateway.pipeline.payload import Payload

RECORD_SUFFIX = ".reason.json"


@dataclass(frozen=True)
class QuarantineRecord:
    path: Path  # where the quarantined payload is now
    record: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.record.get("reason"))


class Quarantine(Protocol):
    def put(self, payload: Payload, outcome: Outcome, name: str | None = None) -> QuarantineRecord:
        """Keep ``payload`` with the reason of ``outcome``; ``name`` overrides the file name."""


def _ensure(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)


def _write_record(target: Path, record: dict[str, Any]) -> None:
    reason_file = target.with_name(target.name + RECORD_SUFFIX)
    fd = os.open(reason_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record, indent=1) + "\n")


def _fhir_issues(outcome: Outcome) -> dict[str, Any]:
    """FHIR payloads' records carry an OperationOutcome, as a FHIR server would answer."""
    if outcome.issues:
        return {}
    from gateway.fhir.validation import operation_outcome

    code = "not-supported" if outcome.reason is ReasonCode.NOT_FHIR else "invalid"
    reason = outcome.reason.value if outcome.reason else "error"
    return {"operationOutcome": operation_outcome([(code, outcome.detail or reason, "")])}


def _record(payload: Payload, outcome: Outcome, digest: str) -> dict[str, Any]:
    extra = _fhir_issues(outcome) if payload.kind.standard == "fhir" else {}
    return {
        **outcome.record(),
        **extra,
        "kind": payload.kind.value,
        "source": payload.source,
        "sha256": digest,
        "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def _move(source: Path, target: Path) -> None:
    """A rename (the spool and the quarantine normally share a volume), a copy otherwise."""
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(str(source), target)


def read_record(payload_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        payload_path.with_name(payload_path.name + RECORD_SUFFIX).read_text(encoding="utf-8")
    )
    return data


class FolderQuarantine:
    """A copy of the payload as ``<sha256[:16]>-<name>`` and the record beside it: the same
    input quarantined twice is one file, and names never collide across inputs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, payload: Payload, outcome: Outcome, name: str | None = None) -> QuarantineRecord:
        _ensure(self.root)
        digest = payload.sha256()
        target = self.root / f"{digest[:16]}-{name or payload.name}"
        if payload.data is not None:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload.data)
        else:
            assert payload.path is not None
            shutil.copyfile(payload.path, target)
        os.chmod(target, 0o600)
        record = _record(payload, outcome, digest)
        _write_record(target, record)
        return QuarantineRecord(target, record)


class SpoolQuarantine:
    """The service's quarantine: the spooled payload is moved (not copied) under the item's
    name; the caller then records the same reason on the item row."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        _ensure(self.root)

    def target(self, payload: Payload, name: str | None = None) -> Path:
        """Where :meth:`put` keeps ``payload``: known before the move, so that the item row
        can name it first."""
        return self.root / (name or payload.name)

    def put(self, payload: Payload, outcome: Outcome, name: str | None = None) -> QuarantineRecord:
        target = self.target(payload, name)
        digest = payload.sha256() if payload.path is None or payload.path.exists() else ""
        if payload.path is not None and payload.path.exists():
            if os.path.abspath(payload.path) != os.path.abspath(target):
                _ensure(self.root)
                _move(payload.path, target)
        elif payload.data is not None:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload.data)
        if target.exists():
            os.chmod(target, 0o600)
        record = _record(payload, outcome, digest)
        _write_record(target, record)
        return QuarantineRecord(target, record)
