"""Opening the database the doctor inspects, with every failure mapped to one error.

Why not :func:`noclash.db.engine.create_engine`: that engine is tuned for noclash's own
server (it switches SQLite to WAL on connect, a persistent change to someone else's file).
The doctor only needs explicit transactions, so that a repair is atomic on SQLite too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from noclash.config import normalise_database_url
from noclash.doctor.dialects import supported
from noclash.doctor.errors import CannotConnect, CannotRead, DoctorError, UnsupportedDatabase


def open_engine(url: str) -> Engine:
    """An engine for ``url``; raises :class:`DoctorError` subclasses, never driver errors."""
    url = normalise_database_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise CannotConnect(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if not supported(backend):
        raise UnsupportedDatabase(
            f"the doctor supports SQLite and PostgreSQL databases, not {backend!r}"
        )
    if backend == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file:")
        if not in_memory and not Path(database).is_file():
            # pysqlite would silently create an empty file: refuse instead.
            raise CannotConnect(f"no SQLite database at {database}")
    try:
        engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    except Exception as exc:  # driver import errors, bad query options
        raise CannotConnect(f"cannot use {parsed.render_as_string()}: {exc}") from exc
    if backend == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: object) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Repairs take the write lock up front; the read-only doctor does not.
            readonly = conn.get_execution_options().get("noclash_readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


@contextlib.contextmanager
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection; failure to connect is :class:`CannotConnect`."""
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as exc:
        raise CannotConnect(
            f"cannot connect to {engine.url.render_as_string()}: {_first_line(exc)}"
        ) from exc
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """Turn a driver error while reading into :class:`CannotRead` naming ``what``."""
    try:
        yield
    except DoctorError:
        raise
    except sa.exc.DBAPIError as exc:
        raise CannotRead(f"cannot read {what}: {_first_line(exc)}") from exc


def _first_line(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


def display_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
