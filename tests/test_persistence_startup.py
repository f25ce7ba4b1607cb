"""Several gateway processes starting at once on a new database (gunicorn workers, a CLI run
beside the service) must all come up: the schema is created once, without a race."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import text


def _start(url: str, barrier: object, results: object) -> None:
    from gateway.persistence.db import Database

    database = Database(url)
    barrier.wait()  # type: ignore[attr-defined]
    try:
        database.create_all()
        with database.session() as session:
            session.execute(text("SELECT count(*) FROM jobs"))
        results.put("ok")  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test with it
        results.put(f"{type(exc).__name__}: {str(exc)[:200]}")  # type: ignore[attr-defined]


@pytest.mark.parametrize("round_", range(4))
def test_processes_starting_together_on_a_new_sqlite_file_all_succeed(round_: int, tmp_path: Path) -> None:
    # before the lock file, 54 of 60 such starts failed ("table ... already exists",
    # "database is locked", "disk I/O error")
    ctx = multiprocessing.get_context("fork")
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    processes = 6
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    children = [ctx.Process(target=_start, args=(url, barrier, results)) for _ in range(processes)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert outcomes == ["ok"] * processes
