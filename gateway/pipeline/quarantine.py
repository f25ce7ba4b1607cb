"""Quarantine: what cannot be made safe is kept, with its reason, and never forwarded.

The quarantine holds originals (PHI): the folder is created 0700 and files 0600. The reason
file carries the reason code, stage and a value-free detail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ReasonCode


@dataclass(frozen=True)
class QuarantineRecord:
    path: Path
    reason: ReasonCode
    detail: str


class FolderQuarantine:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def put_file(
        self, source: Path, reason: ReasonCode, detail: str, stage: str | None = None
    ) -> QuarantineRecord:
        self._ensure()
        digest = _file_digest(source)
        target = self.root / f"{digest[:16]}-{source.name}"
        shutil.copyfile(source, target)
        os.chmod(target, 0o600)
        reason_file = target.with_name(target.name + ".reason.json")
        reason_file.write_text(
            json.dumps(
                {
                    "reason": reason.value,
                    "detail": detail,
                    "stage": stage,
                    "source": str(source),
                    "sha256": digest,
                    "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
        os.chmod(reason_file, 0o600)
        return QuarantineRecord(target, reason, detail)


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()
