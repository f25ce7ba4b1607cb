"""The durable pipeline: accept (spool + row, then ack) -> de-identify -> verify -> forward.

Nothing is lost: the original is on disk (0600) and a row says what to do with it before the
sender hears "success"; a worker leases items, and an item whose worker died is leased again
when its lease runs out. Forwarding is idempotent (stores key by pseudonymised UID / id), so a
crash between store and commit costs a duplicate write of identical bytes, never a duplicate.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from gateway.config import ServiceConfig
from gateway.errors import IntakeUnavailable, ReasonCode
from gateway.persistence.db import Database
from gateway.persistence.identity import IdentityIndex
from gateway.persistence.models import AuditEvent, Item, ItemStatus, Job, Kind, utcnow
from gateway.pipeline.destinations import Destination
from gateway.pipeline.index_directory import IndexDirectory
from gateway.pipeline.outcome import Outcome, Status
from gateway.pipeline.payload import Payload, PayloadKind
from gateway.pipeline.quarantine import RECORD_SUFFIX, SpoolQuarantine
from gateway.pipeline.reconcile import Reconciler
from gateway.pipeline.runner import Runner

log = logging.getLogger("deid_gateway.jobs")

PENDING = (ItemStatus.RECEIVED, ItemStatus.RETRY)
WAITING = (*PENDING, ItemStatus.PROCESSING, ItemStatus.PENDING)
INCOMING = ".incoming"  # hidden: the reconciler leaves request parts in flight alone
INCOMING_STALE_SECONDS = 6 * 3600.0
RECONCILE_GRACE_SECONDS = 30.0  # a row settled this long has no move of its own in flight


@dataclass(frozen=True)
class Receipt:
    job_id: str
    item_ids: tuple[str, ...]


def _write_private(path: Path, data: bytes | Path) -> None:
    """``data`` in a new 0600 file at ``path``, fsynced. A path (a request part already
    streamed to a private file on the spool's volume) is renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if isinstance(data, Path):
        os.chmod(data, 0o600)
        os.replace(data, path)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class JobService:
    def __init__(self, db: Database, config: ServiceConfig, destinations: dict[str, Destination]):
        self.db = db
        self.config = config
        self.destinations = destinations
        self.indexes = {
            name: IdentityIndex(db, name, d.linkage) for name, d in destinations.items()
        }
        self.runners = {
            name: Runner(d, IndexDirectory(self.indexes[name], _patient_source(d)))
            for name, d in destinations.items()
        }
        self.spool = config.data_dir / "spool"
        self.spool.mkdir(parents=True, exist_ok=True)
        os.chmod(self.spool, 0o700)
        self.quarantine = SpoolQuarantine(config.data_dir / "quarantine")
        self.reconciler = Reconciler(db, self.spool, self.quarantine)
        self._undeclared_seen: set[tuple[str, str]] = set()

    # -- intake ------------------------------------------------------------------------------
    def accept(
        self,
        destination: str,
        kind: Kind,
        channel: str,
        payloads: Sequence[bytes | Path],
        sender: str | None = None,
    ) -> Receipt:
        """Persist first, acknowledge after: spool files are fsynced, then rows committed."""
        dest = self.destinations[destination]
        job = Job(
            destination=destination,
            kind=kind,
            channel=channel,
            sender=sender,
            profile_hash=dest.profile.content_hash,
        )
        job.id = os.urandom(16).hex()
        suffix = ".dcm" if kind is Kind.DICOM else ".json"
        items = []
        written: list[Path] = []
        try:
            for seq, payload in enumerate(payloads):
                item_id = os.urandom(16).hex()
                path = self.spool / job.id / f"{item_id}{suffix}"
                written.append(path)  # before the write: a file cut short is removed too
                _write_private(path, payload)
                items.append(
                    Item(
                        id=item_id,
                        job_id=job.id,
                        seq=seq,
                        status=ItemStatus.RECEIVED,
                        spool_path=str(path),
                    )
                )
            with self.db.session() as session:
                session.add(job)
                session.add_all(items)
                session.add(
                    AuditEvent(
                        actor=sender,
                        action=f"receive:{channel}",
                        destination=destination,
                        job_id=job.id,
                        profile_hash=job.profile_hash,
                        counts={"items": len(items)},
                    )
                )
        except BaseException as exc:
            for path in written:
                path.unlink(missing_ok=True)
            if written:
                _remove_empty_parent(written[0])
            if isinstance(exc, OSError):  # the data volume is full, read-only or failing
                raise IntakeUnavailable(
                    detail=f"the spool cannot be written ({_errno(exc)})"
                ) from None
            if isinstance(exc, OperationalError):  # e.g. "database or disk is full"
                raise IntakeUnavailable(
                    ReasonCode.ACCEPT_FAILED, "the database cannot be written"
                ) from None
            raise
        return Receipt(job.id, tuple(i.id for i in items))

    @contextmanager
    def incoming(self) -> Iterator[Path]:
        """A private folder on the spool's volume where a request's parts are streamed as they
        arrive (then renamed into the spool by :meth:`accept`); removed with whatever accept
        did not take. A full or failing volume refuses the request as unavailable (503)."""
        folder = self.spool / INCOMING / os.urandom(8).hex()
        try:
            folder.mkdir(parents=True, mode=0o700)
            yield folder
        except OSError as exc:
            raise IntakeUnavailable(detail=f"the spool cannot be written ({_errno(exc)})") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _sweep_incoming(self) -> None:
        """Folders of requests whose process died mid-upload (older than any upload takes)."""
        cutoff = time.time() - INCOMING_STALE_SECONDS
        root = self.spool / INCOMING
        if not root.exists():
            return
        for folder in root.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue

    # -- leasing -----------------------------------------------------------------------------
    def recover(self) -> int:
        """Items whose lease ran out (their worker died) are pending again."""
        now = utcnow()
        with self.db.session() as session:
            result = session.execute(
                update(Item)
                .where(Item.status == ItemStatus.PROCESSING, Item.lease_until < now)
                .values(status=ItemStatus.RECEIVED, lease_until=None, updated_at=now)
            )
            return _rowcount(result)

    def sweep_orphans(self, grace_seconds: float | None = None) -> int:
        """Files and rows agree again (:mod:`gateway.pipeline.reconcile`): a payload found
        elsewhere than where its row says is moved there (a failure between a row update and
        its move), and a file no row wants is removed (a kill between the fsync and the commit
        of ``accept``, or between "forwarded" and the unlink). Spool files without a row only
        once older than a lease: younger ones may belong to an ``accept`` still committing."""
        lease = self.config.retry.lease_seconds
        grace = min(lease, RECONCILE_GRACE_SECONDS) if grace_seconds is None else grace_seconds
        self._sweep_incoming()
        return self.reconciler.run(grace_seconds=grace, orphan_seconds=lease)

    def locate(self, job_id: str, recorded: str | None) -> Path | None:
        """Where an item's payload is: the path its row names or, after a failure between a
        row update and its move, the other place it can be (spool or quarantine)."""
        if not recorded:
            return None
        path = Path(recorded)
        for candidate in (path, self.spool / job_id / path.name, self.quarantine.root / path.name):
            if candidate.exists():
                return candidate
        return None

    def claim(self) -> str | None:
        now = utcnow()
        lease = now + dt.timedelta(seconds=self.config.retry.lease_seconds)
        for _ in range(5):
            with self.db.session() as session:
                candidate = session.scalar(
                    select(Item.id)
                    .where(
                        (
                            Item.status.in_(PENDING)
                            & ((Item.next_attempt_at.is_(None)) | (Item.next_attempt_at <= now))
                        )
                        | ((Item.status == ItemStatus.PENDING) & (Item.pending_until <= now))
                    )
                    .order_by(Item.received_at, Item.seq)
                    .limit(1)
                )
                if candidate is None:
                    return None
                result = session.execute(
                    update(Item)
                    .where(Item.id == candidate, Item.status.in_((*PENDING, ItemStatus.PENDING)))
                    .values(status=ItemStatus.PROCESSING, lease_until=lease, updated_at=now)
                )
                if _rowcount(result):
                    return str(candidate)
        return None

    def run_once(self) -> bool:
        item_id = self.claim()
        if item_id is None:
            return False
        self.process(item_id)
        return True

    def drain(self, timeout: float = 60.0) -> None:
        """Process until nothing is runnable (tests, CLI); waits for retries up to timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run_once():
                if self.backlog(include_pending=False) == 0:
                    return  # what waits for a patient is not runnable: do not wait for it
                time.sleep(0.05)

    # -- processing --------------------------------------------------------------------------
    def process(self, item_id: str) -> None:
        self._process(item_id)
        self._manifest_if_done(item_id)

    def _manifest_if_done(self, item_id: str) -> None:
        """A delivery (one request) that is complete gets a manifest in folder stores: what was
        forwarded (pseudonymised references), what not and why, under which profile and key."""
        with self.db.session() as session:
            item = session.get(Item, item_id)
            if item is None:
                return
            # one indexed count per item; the whole job is loaded only once it is complete
            still_waiting = session.scalar(
                select(func.count())
                .select_from(Item)
                .where(Item.job_id == item.job_id, Item.status.in_(WAITING))
            )
            job = session.get(Job, item.job_id) if not still_waiting else None
            if job is None:
                return
            dest = self.destinations[job.destination]
            manifest = {
                "delivery": job.id,
                "destination": job.destination,
                "channel": job.channel,
                "kind": job.kind.value,
                "profile": {
                    "name": dest.profile.name,
                    "version": dest.profile.version,
                    "hash": job.profile_hash,
                },
                "key_fingerprint": dest.linkage.pseudonymizer.key.fingerprint,
                "received_at": _aware(job.received_at).isoformat(),
                "completed_at": max(_aware(i.updated_at) for i in job.items).isoformat(),
                "counts": dict(Counter(i.status.value for i in job.items)),
                "forwarded": sorted(
                    ref
                    for i in job.items
                    if i.status is ItemStatus.FORWARDED and i.output_ref
                    for ref in i.output_ref.split(",")
                ),
                "not_forwarded": [
                    {"item": i.id, "status": i.status.value, "reason": i.reason}
                    for i in job.items
                    if i.status is not ItemStatus.FORWARDED
                ],
            }
        for store in {id(s): s for s in (dest.dicom_store, dest.fhir_store)}.values():
            put_manifest = getattr(store, "put_manifest", None)
            if put_manifest is None:
                continue
            try:
                put_manifest(manifest["delivery"], manifest)
            except OSError as exc:  # the store's volume is full: the items are forwarded
                log.warning("manifest of a delivery not written (%s)", _errno(exc))

    def _process(self, item_id: str) -> None:
        with self.db.session() as session:
            item = session.get(Item, item_id)
            assert item is not None
            job = session.get(Job, item.job_id)
            assert job is not None
            spool, kind, destination = item.spool_path, job.kind, job.destination
            attempts, pending_until, received = item.attempts, item.pending_until, item.received_at
            found = self.locate(job.id, spool)
        path = found or Path(str(spool))
        payload = Payload(PayloadKind(kind.value), item_id, path=path, name=Path(str(spool)).name)
        if found is None:
            outcome = Outcome(
                Status.QUARANTINED, ReasonCode.PAYLOAD_MISSING, "spooled payload missing", "intake"
            )
        else:
            outcome = self.runners[destination].run(payload)
        self.release_pending(destination, list(outcome.learned))
        if outcome.undeclared:
            self._report_undeclared(destination, outcome.undeclared)
        settle = _SETTLE[outcome.status]
        settle(
            self,
            _Settling(item_id, destination, payload, outcome, attempts, pending_until, received),
        )

    def _forwarded(self, s: _Settling) -> None:
        latency = (utcnow() - _aware(s.received)).total_seconds()
        self._finish(
            s.item_id,
            ItemStatus.FORWARDED,
            output_ref=",".join(s.outcome.refs)[:2000],
            resources=s.outcome.resources,
            spool_path=None,
            latency_seconds=latency,
            reason=None,
            detail=None,
            stage=None,
        )
        # only after the row says "forwarded": a crash here leaves an orphan file, not a redo
        self._remove_payload(s.payload)

    def _dropped(self, s: _Settling) -> None:
        self._finish(s.item_id, ItemStatus.DROPPED, spool_path=None, **_reason(s.outcome))
        self._remove_payload(s.payload)

    def _remove_payload(self, payload: Payload) -> None:
        """After the row says the payload is not needed: a crash here leaves an orphan file
        (removed by the sweeper), never a redo. Its job folder goes when empty."""
        assert payload.path is not None
        payload.path.unlink(missing_ok=True)
        payload.path.with_name(payload.path.name + RECORD_SUFFIX).unlink(missing_ok=True)
        if payload.path.parent.parent == self.spool:
            _remove_empty_parent(payload.path)

    def _duplicate(self, s: _Settling) -> None:
        """Delivered before, byte for byte: counted, the spooled copy removed."""
        self._finish(s.item_id, ItemStatus.DUPLICATE, spool_path=None, **_reason(s.outcome))
        self._remove_payload(s.payload)

    def _pending(self, s: _Settling) -> None:
        now = utcnow()
        deadline = (
            _aware(s.pending_until)
            if s.pending_until
            else now + dt.timedelta(seconds=self.config.identity.pending_seconds)
        )
        if deadline <= now:
            self._quarantined(
                s,
                Outcome(
                    Status.QUARANTINED,
                    ReasonCode.UNRESOLVED_PATIENT,
                    "unresolved patient: the Patient never arrived",
                    "identity",
                ),
            )
            return
        self._finish(
            s.item_id,
            ItemStatus.PENDING,
            waiting_for=s.outcome.waiting_for,
            pending_until=deadline,
            **_reason(s.outcome),
        )
        # the Patient may have been learned by another worker meanwhile: never wait for it
        waiting = s.outcome.waiting_for
        if waiting and self.indexes[s.destination].lookup(waiting) is not None:
            self.release_pending(s.destination, [waiting])

    def _retry(self, s: _Settling) -> None:
        delay = min(
            self.config.retry.max_delay_seconds,
            self.config.retry.first_delay_seconds * (2**s.attempts),
        )
        self._finish(
            s.item_id,
            ItemStatus.RETRY,
            attempts=s.attempts + 1,
            next_attempt_at=utcnow() + dt.timedelta(seconds=delay),
            **_reason(s.outcome),
        )

    def _quarantined(self, s: _Settling, outcome: Outcome | None = None) -> None:
        outcome = outcome or s.outcome
        # the row first, naming the payload's new home; then the move. A failure between the
        # two leaves the file in the spool, where the sweeper (and release) find it
        target = self.quarantine.target(s.payload)
        self._finish(s.item_id, ItemStatus.QUARANTINED, spool_path=str(target), **_reason(outcome))
        self.quarantine.put(s.payload, outcome)
        if s.payload.path is not None and s.payload.path.parent.parent == self.spool:
            _remove_empty_parent(s.payload.path)

    def _report_undeclared(self, destination: str, names: tuple[str, ...]) -> None:
        """A register (DICOM issuer, FHIR MR system) no namespace declares: audited once per
        destination and process, shown in /metrics. Register names only, never patient values."""
        new = [n for n in names if (destination, n) not in self._undeclared_seen]
        if not new:
            return
        self._undeclared_seen.update((destination, n) for n in new)
        with self.db.session() as session:
            for name in new:
                session.add(
                    AuditEvent(
                        actor=None,
                        action="identity:undeclared-register",
                        destination=destination,
                        counts={name[:200]: 1},
                    )
                )

    def undeclared_registers(self) -> dict[tuple[str, str], int]:
        """(destination, register name) -> how often it was reported (by process)."""
        found: dict[tuple[str, str], int] = {}
        with self.db.session() as session:
            rows = session.execute(
                select(AuditEvent.destination, AuditEvent.counts).where(
                    AuditEvent.action == "identity:undeclared-register"
                )
            ).all()
        for destination, counts in rows:
            for name in counts or {}:
                key = (str(destination), str(name))
                found[key] = found.get(key, 0) + 1
        return found

    def release_pending(self, destination: str, hashes: list[str]) -> int:
        """Items that waited for one of these identifiers go back to the queue."""
        if not hashes:
            return 0
        with self.db.session() as session:
            result = session.execute(
                update(Item)
                .where(Item.status == ItemStatus.PENDING, Item.waiting_for.in_(hashes))
                .where(Item.job_id.in_(select(Job.id).where(Job.destination == destination)))
                .values(status=ItemStatus.RECEIVED, waiting_for=None, updated_at=utcnow())
            )
            return _rowcount(result)

    def _finish(self, item_id: str, status: ItemStatus, **values: Any) -> None:
        with self.db.session() as session:
            session.execute(
                update(Item)
                .where(Item.id == item_id)
                .values(status=status, lease_until=None, updated_at=utcnow(), **values)
            )

    # -- views -------------------------------------------------------------------------------
    def backlog(self, include_pending: bool = True) -> int:
        statuses = WAITING if include_pending else (*PENDING, ItemStatus.PROCESSING)
        with self.db.session() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Item).where(Item.status.in_(statuses))
                )
                or 0
            )

    def job_status(self, job_id: str, sent_by: str | None = None) -> dict[str, Any] | None:
        """The job's counts; None when there is none, or when ``sent_by`` (a sender's token
        id) is given and did not send it."""
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or (sent_by is not None and job.sender != sent_by):
                return None
            counts = Counter(item.status.value for item in job.items)
            return {
                "id": job.id,
                "destination": job.destination,
                "kind": job.kind.value,
                "channel": job.channel,
                "profile_hash": job.profile_hash,
                "received_at": _aware(job.received_at).isoformat(),
                "items": len(job.items),
                "counts": dict(counts),
                "done": all(i.status not in WAITING for i in job.items),
                "quarantined": [
                    {"item": i.id, "reason": i.reason, "detail": i.detail, "stage": i.stage}
                    for i in job.items
                    if i.status is ItemStatus.QUARANTINED
                ],
            }

    def retrying(self) -> dict[tuple[str, str], int]:
        """(destination, reason) -> items waiting for a retry: a destination with items held
        by ``store-unavailable`` has a store that is down, full or misconfigured."""
        with self.db.session() as session:
            rows = session.execute(
                select(Job.destination, Item.reason, func.count())
                .join(Job, Item.job_id == Job.id)
                .where(Item.status == ItemStatus.RETRY)
                .group_by(Job.destination, Item.reason)
            ).all()
        return {(str(d), str(r or "unknown")): int(n) for d, r, n in rows}

    def unavailable_stores(self) -> dict[str, int]:
        """Destination -> items waiting because its store is unavailable (for /readyz)."""
        return {
            d: n
            for (d, r), n in self.retrying().items()
            if r == ReasonCode.STORE_UNAVAILABLE.value and n
        }

    def status_counts(self) -> dict[str, int]:
        with self.db.session() as session:
            rows = session.execute(select(Item.status, func.count()).group_by(Item.status)).all()
            return {status.value: int(count) for status, count in rows}


@dataclass(frozen=True)
class _Settling:
    """One item's outcome on its way into the item row."""

    item_id: str
    destination: str
    payload: Payload
    outcome: Outcome
    attempts: int
    pending_until: dt.datetime | None
    received: dt.datetime


#: What each outcome does to the item row and its spooled payload: one table.
_SETTLE: dict[Status, Callable[[JobService, _Settling], None]] = {
    Status.FORWARDED: JobService._forwarded,
    Status.DUPLICATE: JobService._duplicate,
    Status.DROPPED: JobService._dropped,
    Status.PENDING: JobService._pending,
    Status.RETRY: JobService._retry,
    Status.QUARANTINED: JobService._quarantined,
}


def _reason(outcome: Outcome) -> dict[str, Any]:
    return {
        "reason": outcome.reason.value if outcome.reason else None,
        "detail": outcome.detail or None,
        "stage": outcome.stage,
    }


def _patient_source(dest: Destination) -> Callable[[str], dict[str, Any] | None] | None:
    """Read an unknown Patient from the hospital FHIR server, when the destination names one."""
    source = dest.patient_source
    if source is None:
        return None
    from gateway.pipeline.patient_source import fetch_patient

    return lambda logical_id: fetch_patient(source, logical_id)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE touched (CursorResult.rowcount; typed loosely by SQLAlchemy)."""
    return int(getattr(result, "rowcount", 0) or 0)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _errno(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _remove_empty_parent(path: Path) -> None:
    try:
        path.parent.rmdir()
    except OSError:
        pass
