"""SQLite: the writers of one engine queue in the process before BEGIN IMMEDIATE
(noclash.db.dialects.sqlite_writers).

The queue must never be the reason a writer fails or waits: it is released on every way a
transaction ends, a waiter gives up after the busy timeout exactly as SQLite's own wait
does, readers never join it, and writers of other engines (other processes) still meet
this one at SQLite's lock. Each test uses a short busy timeout, so a queue left taken
shows as ``database is locked`` within a second instead of a hang.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from noclash.config import Settings
from noclash.db.dialects import dialect_for
from noclash.db.dialects.sqlite_writers import QueuedConnection
from noclash.db.engine import create_engine, read_only

SHORT_MS = 300


def _engine(path: Path, busy_timeout_ms: int = SHORT_MS) -> Engine:
    return create_engine(
        f"sqlite:///{path}",
        Settings(sqlite_busy_timeout_ms=busy_timeout_ms, pool_size=8, pool_max_overflow=8),
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "queue.db"
    engine = _engine(path)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
    engine.dispose()
    yield path


def _bump(engine: Engine) -> None:
    with engine.begin() as conn:
        n = conn.exec_driver_sql("SELECT n FROM counter WHERE id = 1").scalar_one()
        conn.exec_driver_sql("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT n FROM counter WHERE id = 1").scalar_one()


@contextmanager
def _writing_elsewhere(engine: Engine) -> Iterator[None]:
    """Another thread holds a writing transaction of ``engine`` while the block runs."""
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE counter SET n = n + 1")
            holding.set()
            done.wait(10)

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(hold)
        assert holding.wait(10)
        try:
            yield
        finally:
            done.set()
        held.result()


def _queue(engine: Engine) -> threading.Lock:
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert isinstance(raw, QueuedConnection)
        return type(raw).queue


def test_every_writing_transaction_goes_through_the_engines_queue(db: Path) -> None:
    engine = _engine(db)
    queue = _queue(engine)
    assert not queue.locked()
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE counter SET n = n + 1")
        assert queue.locked()
    assert not queue.locked()
    with read_only(engine).begin() as conn:  # readers never join it
        conn.exec_driver_sql("SELECT n FROM counter").scalar_one()
        assert not queue.locked()
    other = _engine(db)
    assert _queue(other) is not queue  # one queue per engine
    engine.dispose()
    other.dispose()


def test_the_queue_is_released_however_a_transaction_ends(db: Path) -> None:
    engine = _engine(db)
    queue = _queue(engine)
    # Committed, rolled back, failed inside, failed at a constraint.
    _bump(engine)
    with engine.connect() as conn:
        conn.begin()
        conn.exec_driver_sql("UPDATE counter SET n = n + 100")
        conn.rollback()
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE counter SET n = n + 100")
        raise RuntimeError("the work failed")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
    # Returned to the pool inside a transaction, and invalidated inside one.
    conn = engine.connect()
    conn.begin()
    conn.exec_driver_sql("UPDATE counter SET n = n + 100")
    conn.close()
    conn = engine.connect()
    conn.begin()
    conn.exec_driver_sql("UPDATE counter SET n = n + 100")
    conn.invalidate()
    conn.close()
    assert not queue.locked()
    _bump(engine)  # would wait SHORT_MS and fail if any of the above had kept it
    assert _count(engine) == 2
    engine.dispose()


def test_a_waiter_gives_up_after_the_busy_timeout_as_sqlite_does(db: Path) -> None:
    engine = _engine(db)
    with _writing_elsewhere(engine), pytest.raises(OperationalError) as caught:
        _bump(engine)
    # The same error as SQLite's own busy timeout, so every caller treats it alike.
    assert dialect_for(engine).is_busy(caught.value.orig)
    assert "database is locked" in str(caught.value.orig)
    _bump(engine)
    assert _count(engine) == 2
    engine.dispose()


def test_writers_of_another_engine_still_meet_this_one_at_sqlites_lock(db: Path) -> None:
    """Another engine stands for another process: it has a queue of its own, and SQLite's
    write lock (with its busy timeout) is what serialises the two."""
    ours, theirs = _engine(db), _engine(db)
    with _writing_elsewhere(theirs):
        with pytest.raises(OperationalError) as caught:
            _bump(ours)
        assert dialect_for(ours).is_busy(caught.value.orig)
        assert not _queue(ours).locked()  # the failed BEGIN gave the queue back
    _bump(ours)
    assert _count(ours) == 2
    ours.dispose()
    theirs.dispose()


def test_many_writers_of_many_engines_lose_no_update(db: Path) -> None:
    """Read-modify-write from 24 threads on 3 engines: every increment lands, so the queue
    and SQLite's lock together still serialise every writer, and nothing waits forever."""
    engines = [_engine(db, busy_timeout_ms=30_000) for _ in range(3)]
    start = threading.Barrier(24)

    def writer(i: int) -> None:
        start.wait()
        for _ in range(25):
            _bump(engines[i % 3])

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(writer, range(24)))
    assert _count(engines[0]) == 24 * 25
    for engine in engines:
        assert not _queue(engine).locked()
        engine.dispose()
