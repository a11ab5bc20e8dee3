"""Engines: one per process and database URL, configured by the dialect."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from noclash.config import Settings, normalise_database_url
from noclash.db.dialects import _by_name
from noclash.db.dialects.base import READ_ONLY_OPTION


def create_engine(url: str, settings: Settings | None = None) -> Engine:
    """A SQLAlchemy engine for ``url`` with noclash's per-dialect settings.

    SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE``; PostgreSQL gets a pool with
    pre-ping. Both use the psycopg 3 / pysqlite drivers.
    """
    settings = settings or Settings()
    url = normalise_database_url(url)
    name = sa.engine.make_url(url).get_backend_name()
    dialect = _by_name(name)
    options = dialect.engine_options(
        pool_size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
    )
    engine = sa.create_engine(url, **options)
    dialect.configure_engine(engine, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    return engine


def read_only(engine: Engine) -> Engine:
    """The same engine (same pool) for work that only reads.

    On SQLite its transactions begin DEFERRED instead of IMMEDIATE, so readers never queue
    behind writers for the write lock; elsewhere it changes nothing.
    """
    return engine.execution_options(**{READ_ONLY_OPTION: True})
