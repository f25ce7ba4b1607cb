"""Tables. Rows carry reason codes, counts and pseudonymised references only — never PHI."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class ItemStatus(str, enum.Enum):
    RECEIVED = "received"  # spooled, waiting for a worker
    PROCESSING = "processing"  # leased by a worker
    RETRY = "retry"  # de-identified but the store was down; waits for next_attempt_at
    PENDING = "pending"  # waits for its patient to become known (until pending_until)
    FORWARDED = "forwarded"
    QUARANTINED = "quarantined"
    DROPPED = "dropped"
    DUPLICATE = "duplicate"  # the store held this instance already, byte for byte
    DISCARDED = "discarded"


class Kind(str, enum.Enum):
    DICOM = "dicom"
    FHIR = "fhir"


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[Kind] = mapped_column(Enum(Kind, native_enum=False))
    channel: Mapped[str] = mapped_column(String(32))  # stow-rs, c-store, fhir-rest, ...
    sender: Mapped[str | None] = mapped_column(String(64), nullable=True)  # token id
    profile_hash: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    size: Mapped[int] = mapped_column(Integer, default=0)  # items accepted with it
    items: Mapped[list[Item]] = relationship(back_populates="job", order_by="Item.seq")


class Item(Base):
    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[ItemStatus] = mapped_column(Enum(ItemStatus, native_enum=False), index=True)
    spool_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # indexed: /metrics reads the latest latencies by it
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # which claim holds the lease: a worker whose item was taken over settles nothing
    lease_owner: Mapped[str | None] = mapped_column(String(32), nullable=True)
    claims: Mapped[int] = mapped_column(Integer, default=0)  # > 1: this is a redo
    # when the item was last handed to the workers (None: not yet, or the broker was down)
    queued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    output_ref: Mapped[str | None] = mapped_column(Text, nullable=True)  # pseudonymised only
    resources: Mapped[int] = mapped_column(Integer, default=0)
    waiting_for: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    pending_until: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    latency_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    job: Mapped[Job] = relationship(back_populates="items")


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[bool] = mapped_column(default=False)
    destination: Mapped[str | None] = mapped_column(String(64), nullable=True)  # partner tokens


class AuditEvent(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(32), nullable=True)  # token id
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    destination: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    item_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    profile_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)
    counts: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    #: the reason staff gave (a release, a discard): their words, never a patient value
    note: Mapped[str | None] = mapped_column(Text, nullable=True)  # also a broker look-up's
    # an honest-broker look-up: the kind of identifier looked up (never a value)
    identifier_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)


class WorkbenchSession(Base):
    """A workbench sign-in: the cookie's value is known only to the browser (the row keeps
    its SHA-256), the token it was opened with (revoking the token ends the session), and the
    CSRF token every form of the session carries."""

    __tablename__ = "workbench_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class IdentityLink(Base):
    """One identifier of a person, as a keyed hash, linked to the person key (issue: identity
    index). The plain identifier is never stored: the index alone reveals nobody."""

    __tablename__ = "identity_links"
    __table_args__ = (UniqueConstraint("destination", "id_hash", name="uq_identity_link"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(64))
    id_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))  # dicom-patient, fhir-identifier, fhir-id
    person_key: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdentityConflict(Base):
    """Two identifiers of one Patient already belonged to different persons. Pseudonyms already
    issued do not change; the privacy officer decides."""

    __tablename__ = "identity_conflicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(64))
    id_hash: Mapped[str] = mapped_column(String(64))
    kept_person_key: Mapped[str] = mapped_column(String(64))
    other_person_key: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved: Mapped[bool] = mapped_column(default=False)


class WorkerHeartbeat(Base):
    """A pipeline worker process says it is alive (``/metrics`` counts the recent ones)."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    processed: Mapped[int] = mapped_column(Integer, default=0)


class BulkRun(Base):
    """A distributed ``deidentify`` run: its settings, so a worker on any host runs exactly
    the profile and key the submitter chose. The id is derived from input, output, profile
    and key: the same command again resumes the same run."""

    __tablename__ = "bulk_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    settings: Mapped[dict[str, str]] = mapped_column(JSON)
    files: Mapped[list[BulkFile]] = relationship(back_populates="run", order_by="BulkFile.seq")


class BulkFile(Base):
    """One DICOM file of a distributed run and, once done, its outcome (value-free)."""

    __tablename__ = "bulk_files"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_bulk_file"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("bulk_runs.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    done: Mapped[bool] = mapped_column(default=False, index=True)
    outcome: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    run: Mapped[BulkRun] = relationship(back_populates="files")


class ProfileVersion(Base):
    """A profile as it was saved, keyed by the effective profile's content hash (the one in
    DeidentificationMethod): what a sign-off signs is exactly what the pipeline runs."""

    __tablename__ = "profile_versions"

    content_hash: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    source_file: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)  # the file as read (no secrets: profiles hold none)
    effective: Mapped[str] = mapped_column(Text)  # the canonical JSON the hash covers
    saved_by: Mapped[str] = mapped_column(String(128))
    saved_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    signoffs: Mapped[list[ProfileSignoff]] = relationship(
        back_populates="profile", order_by="ProfileSignoff.id"
    )


class ProfileSignoff(Base):
    """A privacy officer's sign-off of one profile version (also written to the audit)."""

    __tablename__ = "profile_signoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    content_hash: Mapped[str] = mapped_column(
        ForeignKey("profile_versions.content_hash"), index=True
    )
    signed_by: Mapped[str] = mapped_column(String(128))
    statement: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    profile: Mapped[ProfileVersion] = relationship(back_populates="signoffs")


class VaultEntry(Base):
    """One issued pseudonym and its original, sealed with the broker key (AES-256-GCM, the row's
    destination, kind and pseudonym as associated data: a row copied elsewhere does not open).
    Without the broker key the table reveals nobody: pseudonyms are keyed hashes."""

    __tablename__ = "vault_entries"
    __table_args__ = (UniqueConstraint("destination", "kind", "pseudonym", name="uq_vault_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # gateway.linkage.issued.IssuedKind
    pseudonym: Mapped[str] = mapped_column(String(128), index=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # nonce || ciphertext || tag
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReturnedObject(Base):
    """A UID a partner gave an object it returned, once that object is in the clinic: a
    SHA-256 of destination and UID, nothing else. Another returned object that references it
    maps to the new UID the gateway gave it (deterministic from the partner's UID), where an
    unknown UID is quarantined."""

    __tablename__ = "returned_objects"
    __table_args__ = (UniqueConstraint("destination", "digest", name="uq_returned_object"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ExportRun(Base):
    """A cohort export (``deid-gateway export``, ``POST /exports``). The id is derived from
    the cohort file's hash, the destination and the filters: the same export again resumes it.
    Holds settings and value-free counts only; the cohort itself is not stored."""

    __tablename__ = "export_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # running, done, incomplete, failed
    entries: Mapped[int] = mapped_column(Integer, default=0)
    salt: Mapped[str] = mapped_column(String(64))  # keys the fetch hashes of this run
    started_by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # token id
    # one runner at a time (gateway/intake/pull/lease.py): host:pid, and until when
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ExportEntry(Base):
    """One cohort entry's outcome, by row number (never the MRN)."""

    __tablename__ = "export_entries"
    __table_args__ = (UniqueConstraint("export_id", "row", name="uq_export_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    export_id: Mapped[str] = mapped_column(ForeignKey("export_runs.id"), index=True)
    row: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # found, not-found, failed
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)  # value-free: the step
    counts: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)


class ExportMove(Base):
    """A C-MOVE of the service in flight: the PACS sends the series to the service's own
    C-STORE listener (``dimse.enabled``), which may run in another process (serve's master),
    so the listener learns from this row which export (and so which destination) the moved
    instances belong to. ``ref_hash`` is the series' fetch hash (the run's salt), never the
    UID; the row is deleted when the C-MOVE's final response came."""

    __tablename__ = "export_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    export_id: Mapped[str] = mapped_column(ForeignKey("export_runs.id"), index=True)
    ref_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ExportMoveJob(Base):
    """A pipeline job the listener accepted for an :class:`ExportMove` (one per instance):
    insert-only, so concurrent C-STORE associations never overwrite each other."""

    __tablename__ = "export_move_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    move_id: Mapped[int] = mapped_column(Integer, index=True)
    job_id: Mapped[str] = mapped_column(String(32))


class ExportFetch(Base):
    """One series (DICOM) or one patient's resources (FHIR) fetched and accepted into the
    pipeline: an export run again never fetches it twice. ``ref_hash`` is a hash keyed with
    the run's salt (of the SeriesInstanceUID, or of the Patient's id), never the value;
    ``job_ids`` the pipeline jobs it was accepted as (for the cohort report)."""

    __tablename__ = "export_fetches"
    __table_args__ = (UniqueConstraint("export_id", "ref_hash", name="uq_export_fetch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    export_id: Mapped[str] = mapped_column(ForeignKey("export_runs.id"), index=True)
    row: Mapped[int] = mapped_column(Integer)
    kind: Mapped[Kind] = mapped_column(Enum(Kind, native_enum=False))
    ref_hash: Mapped[str] = mapped_column(String(64))
    study_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # DICOM
    route: Mapped[str] = mapped_column(String(32))  # qido-wado, c-get, patient-everything...
    items: Mapped[int] = mapped_column(Integer, default=0)  # instances or resources
    job_ids: Mapped[list[str]] = mapped_column(JSON)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
