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
        raise CannotRead(cannot_read(what, exc)) from exc


# How the drivers say that another connection holds a lock the doctor waited for in vain:
# SQLite's SQLITE_BUSY (5, "database is locked"; 6 is SQLITE_LOCKED, a lock inside one
# connection's shared cache), PostgreSQL's lock_not_available (lock_timeout).
_SQLITE_BUSY = 5
_PG_LOCK_NOT_AVAILABLE = "55P03"


def is_locked(exc: sa.exc.DBAPIError) -> bool:
    orig = exc.orig
    return (
        getattr(orig, "sqlite_errorcode", None) == _SQLITE_BUSY
        or getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE
    )


def cannot_read(what: str, exc: sa.exc.DBAPIError) -> str:
    """The report of a driver error while working on ``what``. A lock held by another
    connection (the application's own writes, a long transaction) is said as such: the
    driver's "database is locked" after "cannot read" made a busy database look broken."""
    if is_locked(exc):
        return (
            f"{what} is locked by another connection (the application's writes, or a "
            f"transaction left open): nothing was changed; run it again when the lock is "
            f"released ({first_line(exc)})"
        )
    return f"cannot read {what}: {first_line(exc)}"


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
