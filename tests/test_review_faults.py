"""Faults injected into a running ``noclash serve`` from outside, as a chaos tester would.

Each test starts the real server as a subprocess (:mod:`tests.support.serve`) on a real
database, breaks something the server does not control, and checks what a client sees:
no 500, no traceback, a 503 problem+json with ``Retry-After`` within a bound while the
fault lasts, nothing half-stored, and a retry with the same ``Idempotency-Key`` giving
the one result once the fault ends. Not covered here: PostgreSQL stopping and starting and
``kill -9`` of the server (tests/test_faults.py, tests/test_outage.py), clients that leave
mid-request (tests/test_disconnects.py).

- **A read-only PostgreSQL** (``default_transaction_read_only`` on the database, as on a
  hot standby after a failover), the server's pooled sessions terminated so that it
  reconnects into it: writes were a 500 (psycopg raises SQLSTATE 25006 as an
  InternalError), and once the switch was lifted they stayed refused until a restart
  (the pooled sessions had been opened read-only, and answer pre-ping).
- **A lock held by another PostgreSQL client** on the rows a request must change: the
  request waited for as long as the lock was held (forever for a session left ``idle in
  transaction``); now ``NOCLASH_LOCK_TIMEOUT_MS`` bounds it, also inside a keyed create,
  whose claim's own bound used to reset the wait to unbounded.
- **Another process holding ``BEGIN EXCLUSIVE`` on the SQLite file** past the busy timeout:
  writes are bounded 503s, and ``/readyz`` still answers at once (it queued for the write
  lock, then said "database unreachable").
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from noclash.config import Settings
from noclash.db.dialects import dialect_for
from noclash.db.engine import create_engine
from tests.support.serve import Served, serving

PROBLEM = "application/problem+json"
pytestmark = pytest.mark.timeout(180)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _client(served: Served, *, timeout: float = 30) -> httpx.Client:
    assert served.token is not None
    headers = {"Authorization": f"Bearer {served.token}"}
    return httpx.Client(base_url=served.base_url, headers=headers, timeout=timeout)


def _assert_retry_later(r: httpx.Response) -> None:
    """A 503 problem+json with Retry-After, and nothing of a traceback in it."""
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.headers.get("retry-after") == "1"
    assert r.json()["type"] == "https://noclash.dev/problems/unavailable"
    assert "Traceback" not in r.text and "SQL" not in r.text


def _count(url: str, table: str, column: str, value: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text(f"SELECT count(*) FROM {table} WHERE {column} = :v")
            return int(conn.execute(query, {"v": value}).scalar_one())
    finally:
        engine.dispose()


# -- PostgreSQL ---------------------------------------------------------------------------
def _terminate_sessions(admin: psycopg.Connection, database: str) -> int:
    """pg_terminate_backend every session on ``database`` (the server's pool, idle)."""
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    return len(rows)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_read_only_postgresql_is_a_503_and_the_keyed_retry_creates_once(
    database_url: str, pg_server_url: str, tmp_path: Path
) -> None:
    database = make_url(database_url).database
    assert database
    name = f"ro-{uuid.uuid4().hex[:8]}"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with (
        serving(database_url, tmp_path) as served,
        _client(served) as http,
        psycopg.connect(_libpq(pg_server_url), autocommit=True) as admin,
    ):
        assert http.post("/api/chatbots", json={"name": "before"}).status_code == 201
        admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        try:
            # The pool's idle sessions die; pre-ping reconnects into the read-only database.
            assert _terminate_sessions(admin, database) > 0
            keyed = http.post("/api/chatbots", json={"name": name}, headers=key)
            plain = http.post("/api/chatbots", json={"name": name})
            listed = http.get("/api/chatbots")
            unready = http.get("/readyz")
        finally:
            # Lifted, and nothing else done: the server's sessions were opened read-only.
            admin.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
        _assert_retry_later(keyed)
        _assert_retry_later(plain)
        assert "read-only" in keyed.json()["detail"]
        assert listed.status_code == 200  # reads go on
        # ... but a load balancer must not send writes here: not ready, retry later.
        assert unready.status_code == 503 and unready.headers.get("retry-after") == "1"
        assert unready.json()["type"] == "https://noclash.dev/problems/not-ready"
        assert "accepts no writes" in unready.json()["detail"], unready.json()
        # Writable again, and the server finds out by itself (no restart, no session
        # killed): the retries with the same key create, once, then replay.
        tries = []
        for _ in range(5):
            first = http.post("/api/chatbots", json={"name": name}, headers=key)
            tries.append(first.status_code)
            if first.status_code != 503:
                break
            _assert_retry_later(first)
            time.sleep(0.2)
        assert tries[-1] == 201 and len(tries) <= 2, tries
        again = http.post("/api/chatbots", json={"name": name}, headers=key)
        ready = http.get("/readyz")
        served.stop()
        stderr = served.stderr()
    assert first.status_code == 201, first.text
    assert again.status_code == 201 and again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert ready.status_code == 200, ready.text
    assert _count(database_url, "chatbots", "name", name) == 1
    assert "Traceback" not in stderr and " 500 " not in stderr, stderr


def _assert_the_keyed_retry_creates_once(
    http: httpx.Client, served: Served, url: str, name: str, key: dict[str, str]
) -> None:
    """Once the fault is gone: the keyed create goes through once and its retry replays
    it, the server is ready, one row, and no traceback was logged. Stops ``served``."""
    first = http.post("/api/chatbots", json={"name": name}, headers=key)
    again = http.post("/api/chatbots", json={"name": name}, headers=key)
    ready = http.get("/readyz")
    served.stop()
    stderr = served.stderr()
    assert first.status_code == 201, first.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert ready.status_code == 200, ready.text
    assert _count(url, "chatbots", "name", name) == 1
    assert "Traceback" not in stderr, stderr


@contextmanager
def _holding(url: str, *statements: str) -> Iterator[psycopg.Connection]:
    """Another client's transaction that ran ``statements`` and keeps their locks until
    the block ends (then rolls back)."""
    with psycopg.connect(_libpq(url)) as other:
        for statement in statements:
            other.execute(statement)
        try:
            yield other
        finally:
            other.rollback()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lock_held_by_another_postgresql_client_is_a_bounded_503(
    database_url: str, tmp_path: Path
) -> None:
    env = {"NOCLASH_LOCK_TIMEOUT_MS": "1500"}
    name = f"locked-{uuid.uuid4().hex[:8]}"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with serving(database_url, tmp_path, env=env) as served, _client(served, timeout=20) as http:
        locked = http.post("/api/chatbots", json={"name": "locked"}).json()
        free = http.post("/api/chatbots", json={"name": "free"}).json()

        # One row locked by a transaction left open elsewhere (a psql session, a job).
        row = f"SELECT 1 FROM chatbots WHERE id = '{locked['id']}' FOR UPDATE"
        with _holding(database_url, row):
            started = time.monotonic()
            patched = http.patch(f"/api/chatbots/{locked['id']}", json={"name": "x"})
            took = time.monotonic() - started
            # Other rows and reads are not held up meanwhile.
            other = http.patch(f"/api/chatbots/{free['id']}", json={"name": "free 2"})
            listed = http.get("/api/chatbots")
        _assert_retry_later(patched)
        assert "locked" in patched.json()["detail"]
        assert took < 10, f"waited {took:.1f} s for the lock"
        assert other.status_code == 200 and listed.status_code == 200

        # A keyed create whose INSERT waits on the table: the claim's own bound (the
        # duplicate wait) must hand back this bound, not PostgreSQL's unbounded default.
        with _holding(database_url, "LOCK TABLE chatbots IN EXCLUSIVE MODE"):
            started = time.monotonic()
            keyed = http.post("/api/chatbots", json={"name": name}, headers=key)
            took = time.monotonic() - started
        _assert_retry_later(keyed)
        assert took < 10, f"waited {took:.1f} s for the lock"

        # The lock is gone: the same requests go through, the keyed one once.
        assert http.patch(f"/api/chatbots/{locked['id']}", json={"name": "x"}).status_code == 200
        _assert_the_keyed_retry_creates_once(http, served, database_url, name, key)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_lock_bound_is_the_sessions_and_migrations_wait_unbounded(database_url: str) -> None:
    """The bound is set once per pooled session; the idempotency claim's tighter bound
    returns to it (not to PostgreSQL's unbounded default), and the migrations' connection
    waits without a bound, as ``noclash db upgrade`` always has, then gets it back."""
    engine = create_engine(database_url, Settings(database_url=database_url, lock_timeout_ms=700))
    dialect = dialect_for(engine)
    show = "SHOW lock_timeout"
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql(show).scalar() == "700ms"
            dialect.limit_lock_wait(conn, 0.05)
            assert conn.exec_driver_sql(show).scalar() == "50ms"
            dialect.limit_lock_wait(conn, None)
            assert conn.exec_driver_sql(show).scalar() == "700ms"
        with dialect.migration_connection(engine) as conn:
            assert conn.exec_driver_sql(show).scalar() == "0"
            conn.rollback()
        with engine.connect() as conn:
            assert conn.exec_driver_sql(show).scalar() == "700ms"
    finally:
        engine.dispose()


# -- SQLite -------------------------------------------------------------------------------
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_held_exclusive_by_another_process_is_bounded_and_readyz_answers(
    database_url: str, tmp_path: Path
) -> None:
    path = make_url(database_url).database
    assert path
    env = {"NOCLASH_SQLITE_BUSY_TIMEOUT_MS": "3000"}
    name = f"busy-{uuid.uuid4().hex[:8]}"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with serving(database_url, tmp_path, env=env) as served, _client(served) as http:
        assert http.post("/api/chatbots", json={"name": "before"}).status_code == 201
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # held well past the busy timeout
        try:
            started = time.monotonic()
            ready = httpx.get(f"{served.base_url}/readyz", timeout=30)
            ready_took = time.monotonic() - started
            started = time.monotonic()
            keyed = http.post("/api/chatbots", json={"name": name}, headers=key)
            plain = http.post("/api/chatbots", json={"name": name})
            writes_took = time.monotonic() - started
            listed = http.get("/api/chatbots")
        finally:
            other.execute("ROLLBACK")
            other.close()
        # Readiness reads; it does not queue for the write lock another process holds.
        assert ready.status_code == 200, ready.text
        assert ready_took < 2.5, f"/readyz took {ready_took:.1f} s"
        _assert_retry_later(keyed)
        _assert_retry_later(plain)
        assert writes_took < 20, f"two writes took {writes_took:.1f} s"  # not a hang
        assert listed.status_code == 200
        # The lock is gone: the keyed retry creates once, then replays.
        _assert_the_keyed_retry_creates_once(http, served, database_url, name, key)
