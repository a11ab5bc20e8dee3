"""Opening the database the doctor inspects, with every failure mapped to one error.

Why not :func:`noclash.db.engine.create_engine`: that engine is tuned for noclash's own
server (it switches SQLite to WAL on connect, a persistent change to someone else's file).
The doctor only needs explicit transactions, so that a repair is atomic on SQLite too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from noclash.config import normalise_database_url
from noclash.db.dialects import UnsupportedDialect
from noclash.doctor.dialects import DOCTOR_DIALECTS
from noclash.doctor.errors import CannotConnect, CannotRead, DoctorError, UnsupportedDatabase


def open_engine(url: str) -> Engine:
    """An engine for ``url``; raises :class:`DoctorError` subclasses, never driver errors."""
    url = normalise_database_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise CannotConnect(f"not a database URL: {url!r}") from exc
    try:
        dialect = DOCTOR_DIALECTS.get(parsed.get_backend_name())
    except UnsupportedDialect as exc:
        raise UnsupportedDatabase(str(exc)) from None
    dialect.check_url(parsed)
    try:
        engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    except Exception as exc:  # driver import errors, bad query options
        raise CannotConnect(f"cannot use {parsed.render_as_string()}: {exc}") from exc
    dialect.configure_engine(engine)
    return engine


@contextlib.contextmanager
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection; failure to connect is :class:`CannotConnect`."""
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as exc:
        raise CannotConnect(
            f"cannot connect to {engine.url.render_as_string()}: {first_line(exc)}"
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
        raise CannotRead(f"cannot read {what}: {first_line(exc)}") from exc


def run_sql(conn: Connection, sql: str) -> sa.CursorResult:
    """Execute ``sql`` exactly as written, with no parameters.

    The doctor's own statements carry names from someone else's schema; passed with an
    empty parameter list (what ``exec_driver_sql`` does), psycopg reads a ``%`` in a quoted
    name (``"100% off"``) as a placeholder and refuses the statement.
    """
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})


def first_line(exc: sa.exc.DBAPIError) -> str:
    """The first line of the driver's own message: a report names the failure, not the
    SQL and parameters SQLAlchemy adds or the driver's DETAIL and HINT lines."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


def display_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
