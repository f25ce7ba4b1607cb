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
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.exc import OperationalError

from gateway.broker.returns import build_return_runners, is_return
from gateway.broker.vault import Vault
from gateway.config import ServiceConfig
from gateway.errors import IntakeUnavailable, ReasonCode
from gateway.linkage.issued import Issued
from gateway.persistence.db import Database
from gateway.persistence.identity import IdentityIndex
from gateway.persistence.models import AuditEvent, Item, ItemStatus, Job, Kind, utcnow
from gateway.pipeline.destinations import Destination
from gateway.pipeline.dispatch import Dispatch, no_dispatch
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
    """Intake persists and hands item ids to ``dispatch`` (in-process queue or the broker);
    workers call :meth:`process_batch` with them. The database row is the truth: a message
    is only a hint, so one lost or delivered twice changes nothing."""

    def __init__(
        self,
        db: Database,
        config: ServiceConfig,
        destinations: dict[str, Destination],
        dispatch: Dispatch = no_dispatch,
        vault: Vault | None = None,
    ):
        """``vault``: where what each delivered item issued is sealed, in its commit (None:
        no destination keeps a vault)."""
        self.db = db
        self.vault = vault
        self.dispatch = dispatch
        self.config = config
        self.destinations = destinations
        self.indexes = {
            name: IdentityIndex(db, name, d.linkage) for name, d in destinations.items()
        }
        self.return_runners = build_return_runners(
            config, vault, {name: d.linkage.identity for name, d in destinations.items()}
        )
        self.runners = {
            name: Runner(
                d,
                IndexDirectory(self.indexes[name], _patient_source(d)),
                results=self.return_runners.get(name),
            )
            for name, d in destinations.items()
        }
        self.spool = config.data_dir / "spool"
        self.spool.mkdir(parents=True, exist_ok=True)
        os.chmod(self.spool, 0o700)
        self.quarantine = SpoolQuarantine(config.data_dir / "quarantine")
        self.reconciler = Reconciler(db, self.spool, self.quarantine)
        self._undeclared_seen: set[tuple[str, str]] = set()
        self._backlog_cache: tuple[float, int] = (0.0, 0)
        self._jobs: dict[str, _JobInfo] = {}
        self._backlog_lock = threading.Lock()

    # -- intake ------------------------------------------------------------------------------
    def accept(
        self,
        destination: str,
        kind: Kind,
        channel: str,
        payloads: Sequence[bytes | Path],
        sender: str | None = None,
    ) -> Receipt:
        """Persist first, acknowledge after: spool files are fsynced, then rows committed
        (durably); then the ids go to the workers. Refused with 503 / 0xA700 (nothing kept)
        while the backlog or the spool's free space is past its limit."""
        self.admit()
        dest = self.destinations[destination]
        received_at = utcnow()
        job_id = os.urandom(16).hex()
        job: dict[str, Any] = {
            "id": job_id,
            "destination": destination,
            "kind": kind,
            "channel": channel,
            "sender": sender,
            "profile_hash": dest.profile.content_hash,
            "received_at": received_at,
            "size": len(payloads),
        }
        suffix = ".dcm" if kind is Kind.DICOM else ".json"
        # None: nobody is told here; the housekeeper hands it over
        queued_at = None if self.dispatch is no_dispatch else received_at
        items: list[dict[str, Any]] = []
        written: list[Path] = []
        try:
            for seq, payload in enumerate(payloads):
                item_id = os.urandom(16).hex()
                path = self.spool / job_id / f"{item_id}{suffix}"
                written.append(path)  # before the write: a file cut short is removed too
                _write_private(path, payload)
                items.append(
                    {
                        "id": item_id,
                        "job_id": job_id,
                        "seq": seq,
                        "status": ItemStatus.RECEIVED,
                        "spool_path": str(path),
                        "received_at": received_at,
                        "updated_at": received_at,
                        "queued_at": queued_at,
                    }
                )
            audit = {
                "actor": sender,
                "action": f"receive:{channel}",
                "destination": destination,
                "job_id": job_id,
                "profile_hash": dest.profile.content_hash,
                "counts": {"items": len(items)},
                "at": received_at,
            }
            with self.db.session() as session:  # Core inserts: no unit of work per request
                connection = session.connection()
                connection.execute(insert(Job), [job])
                if items:
                    connection.execute(insert(Item), items)
                connection.execute(insert(AuditEvent), [audit])
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
        receipt = Receipt(job_id, tuple(i["id"] for i in items))
        self._note_accepted(len(items))
        self.hand_over(receipt.item_ids)
        return receipt

    def hand_over(self, item_ids: Sequence[str]) -> None:
        """Give ids to the workers. A failure (the broker is down) is not the sender's: the
        rows are durable, so the ids are marked unqueued and the housekeeper hands them over
        again once it can."""
        if not item_ids:
            return
        try:
            self.dispatch(item_ids)
        except Exception as exc:  # noqa: BLE001 - the data is safe; only the hint was lost
            log.warning("hand-over to the workers failed (%s); retried", type(exc).__name__)
            self.mark_unqueued(item_ids)

    def mark_unqueued(self, item_ids: Sequence[str]) -> None:
        """Nobody was told of these ids: the housekeeper hands them over at its next round."""
        with self.db.session() as session:
            session.execute(update(Item).where(Item.id.in_(list(item_ids))).values(queued_at=None))

    # -- back-pressure -----------------------------------------------------------------------
    def admit(self) -> None:
        """Refuse new work while the backlog or the spool's free space is past its limit
        (``limits.max_backlog``, ``limits.min_free_spool_bytes``): the sender retries later
        instead of the spool filling the disk."""
        limits = self.config.limits
        try:
            free = shutil.disk_usage(self.spool).free
        except OSError:
            free = None
        if free is not None and free < limits.min_free_spool_bytes:
            raise IntakeUnavailable(
                ReasonCode.SPOOL_LOW,
                "the spool's volume is nearly full; try again later",
                retry_after=60,
            )
        if limits.max_backlog is not None and self._backlog_estimate() >= limits.max_backlog:
            raise IntakeUnavailable(
                ReasonCode.BACKLOG_FULL,
                "the pipeline is behind; try again later",
                retry_after=5,
            )

    def _backlog_estimate(self) -> int:
        """The backlog, counted at most once a second (one indexed count, not one per
        request) and raised by what this process accepted since."""
        now = time.monotonic()
        with self._backlog_lock:
            counted_at, value = self._backlog_cache
            if now - counted_at < 1.0:
                return value
        try:
            value = self.backlog(include_pending=False)
        except OperationalError:  # the accept's own commit will say what is wrong
            return value
        with self._backlog_lock:
            self._backlog_cache = (now, value)
        return value

    def _note_accepted(self, count: int) -> None:
        with self._backlog_lock:
            counted_at, value = self._backlog_cache
            self._backlog_cache = (counted_at, value + count)

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
            try:
                folder.rmdir()  # accept took every part: one syscall
            except OSError:
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
        """What is due (a lease that ran out, a retry whose time came) is runnable again,
        handed to nobody: :meth:`drain` takes it (tests)."""
        return len(self.requeue_due(lambda ids: None))

    def requeue_due(self, dispatch: Dispatch | None = None, everything: bool = False) -> list[str]:
        """Hand over what is due, and only that: retries whose time came, waits for a Patient
        that ran out, leases that expired (a dead worker), and ids whose hand-over failed or
        was lost (a broker that was down, an in-process queue that died with its process).
        One conditional UPDATE ... RETURNING: of several housekeepers, one takes each item.
        ``everything``: every waiting item (an in-process queue after a restart)."""
        now = utcnow()
        stale = now - dt.timedelta(seconds=self.config.retry.lease_seconds)
        received = Item.status == ItemStatus.RECEIVED
        due = (
            (received & (Item.queued_at.is_(None) | (Item.queued_at < stale)))
            | ((Item.status == ItemStatus.RETRY) & (Item.next_attempt_at <= now))
            | ((Item.status == ItemStatus.PENDING) & (Item.pending_until <= now))
            | ((Item.status == ItemStatus.PROCESSING) & (Item.lease_until < now))
        )
        if everything:
            due = due | received
        with self.db.session(durable=False) as session:
            ids = list(
                session.scalars(
                    update(Item)
                    .where(due)
                    .values(
                        status=ItemStatus.RECEIVED,
                        lease_until=None,
                        lease_owner=None,
                        queued_at=now,
                        updated_at=now,
                    )
                    .returning(Item.id)
                )
            )
        if ids:
            (dispatch or self.hand_over)(ids)
        return [str(i) for i in ids]

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
        row update and its move, the other place it can be (spool or quarantine). A host
        that mounts the data folder elsewhere finds it by job and file name."""
        if not recorded:
            return None
        path = Path(recorded)
        for candidate in (path, self.spool / job_id / path.name, self.quarantine.root / path.name):
            if candidate.exists():
                return candidate
        return None

    def _claim_oldest(self) -> tuple[str, list[_Claimed]] | None:
        """The oldest runnable item, leased (for :meth:`drain` and tests; workers are handed
        their ids instead)."""
        now = utcnow()
        for _ in range(5):
            with self.db.session() as session:
                candidate = session.scalar(
                    select(Item.id)
                    .where(_runnable(now))
                    .order_by(Item.received_at, Item.seq)
                    .limit(1)
                )
            if candidate is None:
                return None
            token, claimed = self._claim([str(candidate)])
            if claimed:
                return token, claimed
        return None

    def _claim(self, item_ids: Sequence[str], takeover: bool = False) -> tuple[str, list[_Claimed]]:
        """Lease those of ``item_ids`` that are runnable to a new owner token, returning what
        running them needs (one statement). ``takeover`` (the broker delivers a message
        again: its first worker died or lost the broker) also takes items another claim
        holds; that claim then settles nothing. The commit is relaxed: a lost claim only means
        the item is claimed again."""
        token = os.urandom(16).hex()
        now = utcnow()
        lease = now + dt.timedelta(seconds=self.config.retry.lease_seconds)
        runnable = _runnable(now)
        if takeover:
            runnable = runnable | (Item.status == ItemStatus.PROCESSING)
        items = _items_table()
        with self.db.session(durable=False) as session:
            rows = (
                session.connection()  # a Core statement: no ORM bookkeeping on the hot path
                .execute(
                    update(items)
                    .where(items.c.id.in_(list(item_ids)), runnable)
                    .values(
                        status=ItemStatus.PROCESSING,
                        lease_until=lease,
                        lease_owner=token,
                        claims=items.c.claims + 1,
                        updated_at=now,
                    )
                    .returning(
                        items.c.id,
                        items.c.job_id,
                        items.c.seq,
                        items.c.spool_path,
                        items.c.attempts,
                        items.c.pending_until,
                        items.c.received_at,
                        items.c.claims,
                    )
                )
                .all()
            )
        claimed = [_Claimed._make(row) for row in rows]
        claimed.sort(key=lambda c: (_aware(c.received_at), c.seq))  # arrival order
        return token, claimed

    def _job_of(self, job_ids: set[str]) -> dict[str, _JobInfo]:
        """What running and reporting a job's items needs: a job never changes, so each
        process asks once."""
        unknown = [j for j in job_ids if j not in self._jobs]
        if unknown:
            if len(self._jobs) > 100_000:
                self._jobs.clear()
            with self.db.session() as session:
                for row in session.execute(
                    select(
                        Job.id,
                        Job.kind,
                        Job.destination,
                        Job.size,
                        Job.channel,
                        Job.profile_hash,
                        Job.received_at,
                    ).where(Job.id.in_(unknown))
                ):
                    job_id, kind, destination, size, channel, profile_hash, received_at = row
                    self._jobs[str(job_id)] = _JobInfo(
                        Kind(kind),
                        str(destination),
                        int(size or 0),
                        channel,
                        profile_hash,
                        received_at,
                    )
        return {j: self._jobs[j] for j in job_ids if j in self._jobs}

    def run_once(self) -> bool:
        claimed = self._claim_oldest()
        if claimed is None:
            return False
        self._run_claimed(*claimed)
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
    def process_batch(self, item_ids: Sequence[str], takeover: bool = False) -> int:
        """Claim, run and settle the runnable ones of ``item_ids`` (in arrival order): one
        claim, one durable commit for all their rows, then the spool moves. Ids that are not
        runnable (settled already, held by a live claim) are skipped: handing an id over twice
        is harmless. Returns how many were run."""
        if not item_ids:
            return 0
        token, claimed = self._claim(item_ids, takeover)
        if claimed:
            self._run_claimed(token, claimed)
        return len(claimed)

    def _run_claimed(self, token: str, claimed: list[_Claimed]) -> None:
        jobs = self._job_of({c.job_id for c in claimed})
        plans: list[_Plan] = []
        learned: dict[str, list[str]] = {}
        for item_id, job_id, _seq, spool, attempts, pending_until, received, claims in claimed:
            kind, dest = jobs[job_id].kind, jobs[job_id].destination
            found = self.locate(job_id, spool)
            path = found or Path(str(spool))
            result = is_return(jobs[job_id].channel)
            payload = Payload(
                PayloadKind.of(kind.value, result), item_id, path=path, name=path.name
            )
            if found is None:
                outcome = Outcome(
                    Status.QUARANTINED,
                    ReasonCode.PAYLOAD_MISSING,
                    "spooled payload missing",
                    "intake",
                )
            else:
                outcome = self.runners[dest].run(payload)
            if outcome.status is Status.DUPLICATE and claims > 1:
                # a redo after a lost claim: the bytes in the store are this item's own
                outcome = Outcome(
                    Status.FORWARDED,
                    refs=outcome.refs,
                    resources=outcome.resources,
                    issued=outcome.issued,
                )
            learned.setdefault(dest, []).extend(outcome.learned)
            if outcome.undeclared:
                self._report_undeclared(dest, outcome.undeclared)
            settling = _Settling(
                item_id, dest, job_id, payload, outcome, attempts, pending_until, received
            )
            plans.append(_SETTLE[outcome.status](self, settling))
        now = utcnow()
        settled = self._commit(token, plans, now)
        for plan in settled:
            if plan.after is not None:
                plan.after()
        for dest, hashes in learned.items():
            self.release_pending(dest, hashes)
        by_job: dict[str, list[_Plan]] = {}
        for plan in settled:
            by_job.setdefault(plan.job_id, []).append(plan)
        for job_id, done in by_job.items():
            info = jobs[job_id]
            if len(done) == info.size and all(p.status not in WAITING for p in done):
                # the whole job was this batch: its manifest from memory, no query
                rows = [
                    _ManifestRow(
                        p.item_id, p.status, p.values.get("reason"), p.values.get("output_ref"), now
                    )
                    for p in done
                ]
                self._write_manifest(job_id, info, rows)
            else:
                self._manifest_if_done(job_id)

    def _commit(
        self, token: str, plans: list[_Plan], now: dt.datetime | None = None
    ) -> list[_Plan]:
        """Every row of a batch in one durable commit (it precedes removing the originals),
        one statement per kind of outcome (executemany). A row whose lease another claim took
        is left to that claim."""
        if not plans:
            return []
        now = now or utcnow()
        groups: dict[tuple[ItemStatus, tuple[str, ...]], list[_Plan]] = {}
        for plan in plans:
            groups.setdefault((plan.status, tuple(sorted(plan.values))), []).append(plan)
        settled: list[_Plan] = []
        table = _items_table()
        with self.db.session() as session:
            for (status, keys), group in groups.items():
                statement = (
                    update(table)
                    .where(table.c.id == bindparam("item_id"))
                    .where(table.c.lease_owner == token)
                    .values(
                        status=status,
                        lease_until=None,
                        lease_owner=None,
                        updated_at=now,
                        **{key: bindparam(f"v_{key}") for key in keys},
                    )
                )
                rows = [
                    {"item_id": plan.item_id, **{f"v_{k}": plan.values[k] for k in keys}}
                    for plan in group
                ]
                result = session.connection().execute(statement, rows)
                if _rowcount(result) == len(group):
                    settled.extend(group)
                else:  # some were taken over: which ones, the rows say
                    owned = set(
                        session.scalars(
                            select(Item.id).where(
                                Item.id.in_([p.item_id for p in group]),
                                Item.status == status,
                                Item.updated_at == now,
                            )
                        )
                    )
                    settled.extend(p for p in group if p.item_id in owned)
            self._record_issued(session, settled)
        return settled

    def _record_issued(self, session: Any, settled: list[_Plan]) -> None:
        """The vault rows of what the settled items delivered, in the same commit: an item is
        never "forwarded" without what the broker needs to map its results back."""
        if self.vault is None:
            return
        by_destination: dict[str, list[Issued]] = {}
        for plan in settled:
            if plan.issued:
                by_destination.setdefault(plan.destination, []).extend(plan.issued)
        for destination, entries in by_destination.items():
            self.vault.record(session, destination, entries)

    def _manifest_if_done(self, job_id: str) -> None:
        """A delivery (one request) whose items are all settled gets its manifest (read from
        the rows: its items were settled by several batches or processes)."""
        with self.db.session() as session:
            # one indexed count per job; the job's rows are read only once it is complete
            still_waiting = session.scalar(
                select(func.count())
                .select_from(Item)
                .where(Item.job_id == job_id, Item.status.in_(WAITING))
            )
            if still_waiting:
                return
            rows = [
                _ManifestRow(*row)
                for row in session.execute(
                    select(Item.id, Item.status, Item.reason, Item.output_ref, Item.updated_at)
                    .where(Item.job_id == job_id)
                    .order_by(Item.seq)
                )
            ]
        info = self._job_of({job_id}).get(job_id)
        if info is not None and rows:
            self._write_manifest(job_id, info, rows)

    def _write_manifest(self, job_id: str, info: _JobInfo, items: list[_ManifestRow]) -> None:
        """The manifest of a complete delivery, in folder stores: what was forwarded
        (pseudonymised references), what not and why, under which profile and key."""
        dest = self.destinations[info.destination]
        if is_return(info.channel):
            return  # results returned to the clinic: no manifest in the partner's store
        manifest = {
            "delivery": job_id,
            "destination": info.destination,
            "channel": info.channel,
            "kind": info.kind.value,
            "profile": {
                "name": dest.profile.name,
                "version": dest.profile.version,
                "hash": info.profile_hash,
            },
            "key_fingerprint": dest.linkage.pseudonymizer.key.fingerprint,
            "received_at": _aware(info.received_at).isoformat(),
            "completed_at": max(_aware(i.updated_at) for i in items).isoformat(),
            "counts": dict(Counter(ItemStatus(i.status).value for i in items)),
            "forwarded": sorted(
                ref
                for i in items
                if i.status is ItemStatus.FORWARDED and i.output_ref
                for ref in i.output_ref.split(",")
            ),
            "not_forwarded": [
                {"item": i.id, "status": ItemStatus(i.status).value, "reason": i.reason}
                for i in items
                if i.status is not ItemStatus.FORWARDED
            ],
        }
        for store in {id(s): s for s in (dest.dicom_store, dest.fhir_store)}.values():
            put_manifest = getattr(store, "put_manifest", None)
            if put_manifest is None:
                continue
            try:
                put_manifest(job_id, manifest)
            except OSError as exc:  # the store's volume is full: the items are forwarded
                log.warning("manifest of a delivery not written (%s)", _errno(exc))

    # -- what each outcome does (the plans are committed together, then their ``after``) ----
    def _forwarded(self, s: _Settling) -> _Plan:
        latency = (utcnow() - _aware(s.received)).total_seconds()
        values = {
            "output_ref": ",".join(s.outcome.refs)[:2000],
            "resources": s.outcome.resources,
            "spool_path": None,
            "latency_seconds": latency,
            "reason": None,
            "detail": None,
            "stage": None,
        }
        # only after the row says "forwarded": a crash here leaves an orphan file, not a redo
        return s.plan(ItemStatus.FORWARDED, values, lambda: self._remove_payload(s.payload))

    def _dropped(self, s: _Settling) -> _Plan:
        values = {"spool_path": None, **_reason(s.outcome)}
        return s.plan(ItemStatus.DROPPED, values, lambda: self._remove_payload(s.payload))

    def _duplicate(self, s: _Settling) -> _Plan:
        """Delivered before, byte for byte: counted, the spooled copy removed."""
        values = {"spool_path": None, **_reason(s.outcome)}
        return s.plan(ItemStatus.DUPLICATE, values, lambda: self._remove_payload(s.payload))

    def _remove_payload(self, payload: Payload) -> None:
        """After the row says the payload is not needed: a crash here leaves an orphan file
        (removed by the sweeper), never a redo. Its job folder goes when empty."""
        assert payload.path is not None
        payload.path.unlink(missing_ok=True)
        payload.path.with_name(payload.path.name + RECORD_SUFFIX).unlink(missing_ok=True)
        if payload.path.parent.parent == self.spool:
            _remove_empty_parent(payload.path)

    def _pending(self, s: _Settling) -> _Plan:
        now = utcnow()
        deadline = (
            _aware(s.pending_until)
            if s.pending_until
            else now + dt.timedelta(seconds=self.config.identity.pending_seconds)
        )
        if deadline <= now:
            return self._quarantined(
                s,
                Outcome(
                    Status.QUARANTINED,
                    ReasonCode.UNRESOLVED_PATIENT,
                    "unresolved patient: the Patient never arrived",
                    "identity",
                ),
            )
        waiting = s.outcome.waiting_for

        def release_if_learned() -> None:
            # the Patient may have been learned by another worker meanwhile: never wait for it
            if waiting and self.indexes[s.destination].lookup(waiting) is not None:
                self.release_pending(s.destination, [waiting])

        values = {"waiting_for": waiting, "pending_until": deadline, **_reason(s.outcome)}
        return s.plan(ItemStatus.PENDING, values, release_if_learned)

    def _retry(self, s: _Settling) -> _Plan:
        delay = min(
            self.config.retry.max_delay_seconds,
            self.config.retry.first_delay_seconds * (2**s.attempts),
        )
        values = {
            "attempts": s.attempts + 1,
            "next_attempt_at": utcnow() + dt.timedelta(seconds=delay),
            **_reason(s.outcome),
        }
        return s.plan(ItemStatus.RETRY, values)

    def _quarantined(self, s: _Settling, outcome: Outcome | None = None) -> _Plan:
        outcome = outcome or s.outcome
        # the row first, naming the payload's new home; then the move. A failure between the
        # two leaves the file in the spool, where the sweeper (and release) find it
        target = self.quarantine.target(s.payload)

        def move() -> None:
            self.quarantine.put(s.payload, outcome)
            if s.payload.path is not None and s.payload.path.parent.parent == self.spool:
                _remove_empty_parent(s.payload.path)

        values = {"spool_path": str(target), **_reason(outcome)}
        return s.plan(ItemStatus.QUARANTINED, values, move)

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
        """Items that waited for one of these identifiers go back to the workers."""
        if not hashes:
            return 0
        now = utcnow()
        with self.db.session() as session:
            released = list(
                session.scalars(
                    update(Item)
                    .where(Item.status == ItemStatus.PENDING, Item.waiting_for.in_(hashes))
                    .where(Item.job_id.in_(select(Job.id).where(Job.destination == destination)))
                    .values(
                        status=ItemStatus.RECEIVED, waiting_for=None, queued_at=now, updated_at=now
                    )
                    .returning(Item.id)
                )
            )
        self.hand_over([str(i) for i in released])
        return len(released)

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


class _JobInfo(NamedTuple):
    kind: Kind
    destination: str
    size: int  # items accepted with it (0: a job recorded before sizes were)
    channel: str
    profile_hash: str
    received_at: dt.datetime


class _ManifestRow(NamedTuple):
    id: str
    status: ItemStatus
    reason: str | None
    output_ref: str | None
    updated_at: dt.datetime


class _Claimed(NamedTuple):
    """What a claim returns of each item: enough to run it without reading its row again."""

    id: str
    job_id: str
    seq: int
    spool_path: str | None
    attempts: int
    pending_until: dt.datetime | None
    received_at: dt.datetime
    claims: int


@dataclass(frozen=True)
class _Plan:
    """One item's new row values, and what to do once they are committed."""

    item_id: str
    job_id: str
    status: ItemStatus
    values: dict[str, Any]
    after: Callable[[], None] | None = None
    destination: str = ""
    issued: tuple[Issued, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class _Settling:
    """One item's outcome on its way into the item row."""

    item_id: str
    destination: str
    job_id: str
    payload: Payload
    outcome: Outcome
    attempts: int
    pending_until: dt.datetime | None
    received: dt.datetime

    def plan(
        self,
        status: ItemStatus,
        values: dict[str, Any],
        after: Callable[[], None] | None = None,
    ) -> _Plan:
        return _Plan(
            self.item_id, self.job_id, status, values, after, self.destination, self.outcome.issued
        )


def _items_table() -> Table:
    table = Item.__table__
    assert isinstance(table, Table)
    return table


def _runnable(now: dt.datetime) -> Any:
    """Items a worker may take now: received, a retry whose time came, a wait that ran out."""
    return (
        (Item.status == ItemStatus.RECEIVED)
        | (
            (Item.status == ItemStatus.RETRY)
            & ((Item.next_attempt_at.is_(None)) | (Item.next_attempt_at <= now))
        )
        | ((Item.status == ItemStatus.PENDING) & (Item.pending_until <= now))
    )


#: What each outcome does to the item row and its spooled payload: one table.
_SETTLE: dict[Status, Callable[[JobService, _Settling], _Plan]] = {
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
