"""Files and rows agree again: the item row is the truth about an item, and a payload file found
anywhere else than where its row says (a failure or a kill between a move and a commit) is
moved there; a file no row wants any more is removed.

Every state change that both moves a file and updates a row writes the row first and moves
after, so a failure between the two leaves a row that names the file's new home and the file
still at its old one. This sweeper completes the move. It only acts on rows settled for
``grace_seconds`` (an operation may be between its commit and its move right now) and never
on an item a worker holds.

Where a payload belongs, by its row's status (one table):

=========================  ==========================================
received, retry, pending   the row's path (spool, or the quarantine after a release)
quarantined                the row's path (``quarantine/<item>``), with its record file
forwarded, dropped,        nowhere: the file is removed (spool files once older than
discarded                  a lease, quarantine files once the row is settled)
processing                 left alone (its worker's lease decides)
=========================  ==========================================
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from gateway.errors import ReasonCode
from gateway.persistence.db import Database
from gateway.persistence.models import Item, ItemStatus, Job, utcnow
from gateway.pipeline.outcome import Outcome, Status
from gateway.pipeline.payload import Payload, PayloadKind
from gateway.pipeline.quarantine import RECORD_SUFFIX, SpoolQuarantine

log = logging.getLogger("deid_gateway.reconcile")

WANTED = frozenset(
    {ItemStatus.RECEIVED, ItemStatus.RETRY, ItemStatus.PENDING, ItemStatus.QUARANTINED}
)
GONE = frozenset(
    {ItemStatus.FORWARDED, ItemStatus.DROPPED, ItemStatus.DUPLICATE, ItemStatus.DISCARDED}
)
CHUNK = 500


@dataclass(frozen=True)
class _Row:
    item_id: str
    status: ItemStatus
    path: Path | None
    kind: str
    updated_at: dt.datetime
    reason: str | None
    detail: str | None
    stage: str | None


def item_id_of(path: Path) -> str:
    """Spooled and quarantined payloads are named ``<item id>.<suffix>``."""
    return path.name.split(".", 1)[0]


def _payload_files(root: Path) -> Iterator[Path]:
    if not root.exists():
        return
    for path in root.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if hidden or path.name.endswith(RECORD_SUFFIX):
            continue
        try:
            if path.is_file():
                yield path
        except OSError:
            continue


def _rows(db: Database, item_ids: list[str]) -> dict[str, _Row]:
    out: dict[str, _Row] = {}
    for start in range(0, len(item_ids), CHUNK):
        with db.session() as session:
            found = session.execute(
                select(Item, Job.kind)
                .join(Job, Item.job_id == Job.id)
                .where(Item.id.in_(item_ids[start : start + CHUNK]))
            ).all()
            for item, kind in found:
                out[item.id] = _Row(
                    item.id,
                    item.status,
                    Path(item.spool_path) if item.spool_path else None,
                    kind.value,
                    _aware(item.updated_at),
                    item.reason,
                    item.detail,
                    item.stage,
                )
    return out


class Reconciler:
    """Run by every worker loop now and then (``JobService.sweep_orphans``); idempotent, and
    several processes may run it at once (a file another sweeper moved first is skipped)."""

    def __init__(self, db: Database, spool: Path, quarantine: SpoolQuarantine) -> None:
        self.db = db
        self.spool = spool
        self.quarantine = quarantine

    def run(self, grace_seconds: float, orphan_seconds: float) -> int:
        """Files moved or removed. ``grace_seconds``: how long a row must have been settled
        before its files are touched; ``orphan_seconds``: how old a spool file without a row
        must be (a younger one may belong to an ``accept`` still committing)."""
        files = [*_payload_files(self.spool), *_payload_files(self.quarantine.root)]
        rows = _rows(self.db, sorted({item_id_of(p) for p in files}))
        settled_before = utcnow() - dt.timedelta(seconds=grace_seconds)
        orphan_cutoff = time.time() - orphan_seconds
        changed = 0
        for path in files:
            try:
                changed += self._one(
                    path, rows.get(item_id_of(path)), settled_before, orphan_cutoff
                )
            except OSError as exc:  # another sweeper was first, or the disk refuses: next time
                log.warning("reconcile skipped a file (%s)", type(exc).__name__)
        self._remove_empty_job_folders()
        return changed

    def _one(
        self, path: Path, row: _Row | None, settled_before: dt.datetime, orphan_cutoff: float
    ) -> int:
        in_spool = path.is_relative_to(self.spool)
        if row is None:  # never recorded: a crash inside accept (never in the quarantine)
            if in_spool and path.stat().st_mtime < orphan_cutoff:
                path.unlink()
                return 1
            return 0
        if row.status is ItemStatus.PROCESSING or row.updated_at > settled_before:
            return 0
        if row.status in GONE:
            if in_spool and path.stat().st_mtime >= orphan_cutoff:
                return 0
            _remove(path)
            return 1
        home = row.path
        if home is None or _same(home, path):
            return 0
        if home.exists():  # the row's file is there: this one is a leftover of the same bytes
            _remove(path)
            return 1
        self._move_home(path, home, row)
        return 1

    def _move_home(self, path: Path, home: Path, row: _Row) -> None:
        if row.status is ItemStatus.QUARANTINED and home.parent == self.quarantine.root:
            outcome = Outcome(Status.QUARANTINED, _reason(row.reason), row.detail or "", row.stage)
            payload = Payload(PayloadKind(row.kind), row.item_id, path=path, name=home.name)
            self.quarantine.put(payload, outcome)
        else:
            home.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(path, home)
        path.with_name(path.name + RECORD_SUFFIX).unlink(missing_ok=True)
        log.info("reconcile moved an item's payload to where its row says (%s)", row.status.value)

    def _remove_empty_job_folders(self) -> None:
        if not self.spool.exists():
            return
        for folder in self.spool.iterdir():
            try:
                if folder.is_dir() and not folder.name.startswith("."):
                    folder.rmdir()  # only succeeds when empty
            except OSError:
                continue


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + RECORD_SUFFIX).unlink(missing_ok=True)


def _same(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _reason(value: str | None) -> ReasonCode:
    try:
        return ReasonCode(value)
    except ValueError:
        return ReasonCode.INTERNAL_ERROR


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
