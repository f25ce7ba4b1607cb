"""Engine and sessions. SQLite gets WAL and a busy timeout so worker threads and processes
share it safely; PostgreSQL is used as configured.

Two kinds of commit. A *durable* one (the default) is on disk before it returns: intake commits
the rows of what it is about to acknowledge this way. A *relaxed* one
(``session(durable=False)``) survives a crash of the process but may be lost to a power cut
or a kernel crash: SQLite in WAL mode with ``synchronous=NORMAL`` (the WAL is synced at
checkpoints, not at each commit), PostgreSQL with ``synchronous_commit = off`` (at most about
three WAL-writer delays lost, never a corrupt database). Claims, hand-overs, heartbeats and
leases are written this way: each is a hint that is made again when lost (a lost claim leaves
the item "received", and it is claimed again). A batch's settled rows are durable: the spool
originals are removed after them.

No ping before each use of a pooled connection (a round trip per transaction): when the
database restarts, the first statement on a dead connection fails, SQLAlchemy invalidates the
whole pool, and that one operation is retried by its caller (a sender gets 503, a worker's
items go back to the queue when their lease runs out).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.persistence.models import Base

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's own locking only
    fcntl = None  # type: ignore[assignment]


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        kwargs = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=False, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
            _owner_only(self.engine.url.database)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, future=True)
        self._relaxed_sessions = self._sessions
        self._relaxed_engine: Engine | None = None
        if url.startswith("sqlite"):
            relaxed = create_engine(url, future=True, pool_pre_ping=False, **kwargs)
            event.listen(relaxed, "connect", _sqlite_relaxed_pragmas)
            self._relaxed_engine = relaxed
            self._relaxed_sessions = sessionmaker(relaxed, expire_on_commit=False, future=True)
        elif self.engine.dialect.name == "postgresql":
            # the setting rides on the connection: no extra round trip per transaction
            relaxed = create_engine(
                url,
                future=True,
                pool_pre_ping=False,
                connect_args={"options": "-c synchronous_commit=off"},
            )
            self._relaxed_engine = relaxed
            self._relaxed_sessions = sessionmaker(relaxed, expire_on_commit=False, future=True)

    def dispose(self) -> None:
        """Close every pooled connection (SQLite then folds its WAL back into the file)."""
        self.engine.dispose()
        if self._relaxed_engine is not None:
            self._relaxed_engine.dispose()

    def create_all(self) -> None:
        """Create missing tables. Several processes starting at once on a new database take
        turns: PostgreSQL through an advisory lock, SQLite through a lock file (its existence
        checks run before its write lock, so two processes would both create a table)."""
        with self._first_use_lock(), self.engine.begin() as connection:
            if self.engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(7250001)"))
            Base.metadata.create_all(connection)

    @contextmanager
    def _first_use_lock(self) -> Iterator[None]:
        """Processes opening a new SQLite file at once race to switch it to WAL (SQLite then
        says "database is locked" or "disk I/O error"): a lock file beside the database makes
        the first connection and the schema one process at a time."""
        path = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        if not path or path == ":memory:" or fcntl is None:
            yield
            return
        fd = os.open(f"{path}.init-lock", os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def session(self, durable: bool = True) -> Iterator[Session]:
        """A transaction, committed when the block ends. ``durable=False``: see the module."""
        session = (self._sessions if durable else self._relaxed_sessions)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def _owner_only(path: str | None) -> None:
    """The database holds token hashes and keyed identity hashes: 0600, created so before
    SQLite opens it (its -wal and -shm files take the same mode)."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def private_dir(path: Path) -> None:
    """A data folder the gateway creates is owner-only (0700); one that exists is left as
    its operator made it."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)  # another process may be first
        os.chmod(path, 0o700)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_relaxed_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
