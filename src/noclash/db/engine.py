"""Engines: one per process and database URL, configured by the dialect."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import ArgumentError, DBAPIError

from noclash.config import Settings, normalise_database_url
from noclash.db.dialects import _by_name
from noclash.db.dialects.base import (
    READ_ONLY_OPTION,
    DatabaseUnavailable,
    Dialect,
    UnsupportedDialect,
)


def create_engine(
    url: str, settings: Settings | None = None, *, must_exist: bool = False
) -> Engine:
    """A SQLAlchemy engine for ``url`` with noclash's per-dialect settings.

    SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE``; PostgreSQL gets a pool with
    pre-ping and a bound on lock waits (``lock_timeout``). Both use the psycopg 3 /
    pysqlite drivers; a URL naming another database or driver raises
    :class:`UnsupportedDialect` here, not an ImportError or a TypeError later.
    ``must_exist``: a database that does not exist is an error instead of being created
    (see :meth:`~noclash.db.dialects.base.Dialect.must_exist`).
    """
    settings = settings or Settings()
    try:
        parsed = sa.engine.make_url(normalise_database_url(url))
    except ArgumentError:
        raise UnsupportedDialect(
            "it is not a URL: write sqlite:///path/to/file.db or "
            "postgresql://user@host/database"
        ) from None
    dialect = _by_name(parsed.get_backend_name())
    dialect.check_url(parsed)
    url = dialect.must_exist(parsed) if must_exist else parsed  # type: ignore[assignment]
    options = dialect.engine_options(
        pool_size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
    )
    engine = sa.create_engine(url, **options)
    dialect.configure_engine(
        engine,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        lock_timeout_ms=settings.lock_timeout_ms,
    )
    _reconnect_when_read_only(engine, dialect)
    return engine


def _reconnect_when_read_only(engine: Engine, dialect: Dialect) -> None:
    """Treat "the database accepts no writes" as a lost connection: the pool replaces it.

    Why: whether a session may write is settled when it connects. A PostgreSQL session
    opened while ``default_transaction_read_only`` was on, or on a server that was then a
    standby (or reached, by a host name, before a failover moved that name), stays
    read-only for as long as it lives; a SQLite file opened while it could not be written
    stays open read-only. With pre-ping alone those sessions answer their ping and stay
    pooled, so every write was refused long after the database was writable again, until
    the process was restarted. Marked as a disconnect, the error invalidates the pool
    (SQLAlchemy's handling of a lost server): the next checkouts connect anew and see the
    database as it is now. The request itself is still answered 503 (retry later).
    """

    @event.listens_for(engine, "handle_error")
    def _read_only_is_a_lost_session(context: ExceptionContext) -> None:
        if dialect.is_read_only(context.original_exception):
            context.is_disconnect = True


def open_engine(url: str, settings: Settings | None = None, *, must_exist: bool = False) -> Engine:
    """:func:`create_engine`, connected once: a database that cannot be opened (missing,
    unreadable, not a database, a server that does not answer) raises
    :class:`DatabaseUnavailable` with one line saying why, before any command's first query
    fails with a traceback around it."""
    engine = create_engine(url, settings, must_exist=must_exist)
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        engine.dispose()
        message = _by_name(engine.dialect.name).open_error(exc.orig, engine.url)
        raise DatabaseUnavailable(message) from None
    return engine


def read_only(engine: Engine) -> Engine:
    """The same engine (same pool) for work that only reads.

    On SQLite its transactions begin DEFERRED instead of IMMEDIATE, so readers never queue
    behind writers for the write lock; elsewhere it changes nothing.
    """
    return engine.execution_options(**{READ_ONLY_OPTION: True})
