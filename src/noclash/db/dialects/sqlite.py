"""SQLite: the embedded default.

Two things make SQLite safe under concurrent writers:

- WAL mode, so readers never block the writer and the writer never blocks readers;
- ``BEGIN IMMEDIATE`` for every writing transaction, with a busy timeout. A deferred transaction
  that reads and then writes cannot wait for the lock (SQLite reports ``database is locked``
  at once to avoid a deadlock); an immediate one takes the write lock up front and waits
  for up to ``busy_timeout`` instead.

The writers of one engine first queue in the process (:mod:`.sqlite_writers`): SQLite's
own wait is a sleep that leaves the lock idle and lets a few threads take it over and
over while the rest starve.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from sqlalchemy import Table, create_engine, event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import SingletonThreadPool

from noclash.db.dialects.base import (
    ENGINE_OPTIONS,
    READ_ONLY_OPTION,
    BackupFailed,
    BackupTargetExists,
    Dialect,
    DriverUniqueError,
    MigrationCheckFailed,
    UnsupportedDialect,
    driver_message,
)
from noclash.db.dialects.sqlite_writers import QueuedConnection, connection_class

# SQLITE_CONSTRAINT_UNIQUE and SQLITE_CONSTRAINT_PRIMARYKEY (extended result codes).
_UNIQUE_CODES = {2067, 1555}
# SQLITE_CONSTRAINT_FOREIGNKEY.
_FOREIGN_KEY_CODE = 787
# SQLITE_BUSY and its extended codes (another connection holds the write lock).
_BUSY_CODES = {5, 261, 517, 773}
# SQLITE_READONLY (the primary code of every SQLITE_READONLY_* extended code): the file,
# or its directory for the journal, may not be written by this process.
_READONLY_CODE = 8
_COLUMNS = re.compile(r"UNIQUE constraint failed: (?P<cols>[\w.]+(?:, [\w.]+)*)$")
_INDEX = re.compile(r"UNIQUE constraint failed: index '(?P<name>[^']+)'$")


class SQLiteDialect(Dialect):
    name: ClassVar[str] = "sqlite"
    # A file beside the app, opened by the app itself.
    embedded: ClassVar[bool] = True
    # No gen_random_uuid(): the application generates UUIDv4 values.
    server_generates_uuid4: ClassVar[bool] = False
    # SQLite's WITH clause only holds SELECTs.
    supports_dml_in_cte: ClassVar[bool] = False
    # Python's sqlite3.
    driver: ClassVar[str] = "pysqlite"

    def insert(self, table: Table) -> Any:
        return sqlite_insert(table)

    def unique_error(self, exc: BaseException) -> DriverUniqueError | None:
        if not isinstance(exc, sqlite3.IntegrityError):
            return None
        code = getattr(exc, "sqlite_errorcode", None)
        message = str(exc)
        if code is not None and code not in _UNIQUE_CODES:
            return None
        if m := _INDEX.search(message):
            return DriverUniqueError(None, (), m.group("name"), message)
        if m := _COLUMNS.search(message):
            pairs = [c.split(".", 1) for c in m.group("cols").split(", ")]
            tables = {p[0] for p in pairs}
            table = pairs[0][0] if len(tables) == 1 else None
            return DriverUniqueError(table, tuple(p[-1] for p in pairs), None, message)
        return None

    def is_foreign_key_violation(self, exc: BaseException) -> bool:
        return (
            isinstance(exc, sqlite3.IntegrityError)
            and getattr(exc, "sqlite_errorcode", None) == _FOREIGN_KEY_CODE
        )

    def is_read_only(self, exc: BaseException) -> bool:
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF == _READONLY_CODE

    def check_url(self, url: URL) -> None:
        super().check_url(url)
        if _in_memory(url):
            # Every pooled connection would open a database of its own, empty, and all of
            # it is gone when the process exits.
            raise UnsupportedDialect(
                "an in-memory SQLite database (sqlite://) lasts one connection: give a file, "
                "such as sqlite:///./noclash.db"
            )

    def must_exist(self, url: URL) -> URL:
        """A ``file:`` URI with ``mode=rw``: SQLite opens the file for reading and writing
        but never creates it."""
        if _in_memory(url) or url.query.get("uri"):
            return url
        path = os.path.abspath(url.database or "")
        return url.set(database="file:" + quote(path), query={**url.query, "mode": "rw",
                                                               "uri": "true"})  # fmt: skip

    def open_error(self, exc: BaseException, url: URL) -> str:
        """sqlite3 says "unable to open database file" for a missing file, a missing
        directory and a permission problem alike, without the path: say which."""
        path = _path(url)
        message = driver_message(exc)
        if path is None:
            return f"cannot open the SQLite database: {message}"
        if not path.parent.is_dir():
            return f"cannot open the SQLite database {path}: its directory does not exist"
        if "unable to open" in message and not path.exists():
            return f"the SQLite database {path} does not exist (check the path)"
        if "not a database" in message:
            return f"{path} is not a SQLite database ({message})"
        if "unable to open" in message or "readonly" in message:
            return (
                f"cannot open the SQLite database {path}: {message} (noclash needs to read "
                "and write the file and to create files beside it, in its directory)"
            )
        return f"cannot open the SQLite database {path}: {message}"

    def engine_options(self, *, pool_size: int, max_overflow: int, busy_timeout_ms: int) -> dict:
        return {
            **super().engine_options(
                pool_size=pool_size, max_overflow=max_overflow, busy_timeout_ms=busy_timeout_ms
            ),
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "connect_args": {
                "timeout": busy_timeout_ms / 1000,
                "check_same_thread": False,
                # Writers of this engine queue in the process before BEGIN IMMEDIATE.
                "factory": connection_class(busy_timeout_ms / 1000),
            },
        }

    def configure_engine(
        self,
        engine: Engine,
        *,
        busy_timeout_ms: int,
        lock_timeout_ms: int = 0,
        autocheckpoint: bool = True,
    ) -> None:
        # lock_timeout_ms is PostgreSQL's: every SQLite writer waits for the one write
        # lock at BEGIN IMMEDIATE, bounded by busy_timeout_ms, and then waits for nothing.
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is DEFERRED).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            if not autocheckpoint:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Read-only work (see noclash.db.engine.read_only) needs no write lock: in WAL
            # mode a deferred transaction reads a consistent snapshot beside the writer.
            read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
            if read_only:
                conn.exec_driver_sql("BEGIN")
                return
            raw = conn.connection.dbapi_connection
            queued = isinstance(raw, QueuedConnection)
            if queued:  # this engine's other writers first (see sqlite_writers)
                try:
                    raw.take_queue()
                except sqlite3.OperationalError as exc:
                    # As SQLAlchemy wraps a BEGIN IMMEDIATE that timed out: one error.
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from None
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                if queued:
                    raw.give_back()
                raise

    def nonblocking_engine(self, engine: Engine) -> Engine | None:
        """One connection with a busy timeout of 0 (``BEGIN IMMEDIATE`` fails at once while
        another connection writes) and no automatic checkpoint. In WAL mode with
        ``synchronous=NORMAL`` a commit then only appends to the log, which the OS buffers:
        nothing in its transactions waits. The caller checkpoints elsewhere. None for a
        database in memory: a connection of its own would open another, empty one."""
        if engine.url.database in (None, "", ":memory:"):
            return None
        quick = create_engine(engine.url, poolclass=SingletonThreadPool, pool_size=1,
                              connect_args={"check_same_thread": False},
                              **ENGINE_OPTIONS)  # fmt: skip
        self.configure_engine(quick, busy_timeout_ms=0, autocheckpoint=False)
        return quick

    def is_busy(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and getattr(
            exc, "sqlite_errorcode", None
        ) in _BUSY_CODES

    def checkpoint(self, engine: Engine) -> None:
        with engine.connect() as conn:
            # On the driver's connection, in autocommit (see settle()); PASSIVE copies what
            # no reader still needs and waits for no one.
            conn.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]

    @contextmanager
    def migration_connection(self, engine: Engine) -> Iterator[Connection]:
        """A connection with foreign keys off while migrations run, as SQLite's own
        procedure for a table rebuild says (lang_altertable.html, "other kinds of table
        schema changes"): a rebuild drops the old table, and with foreign keys on, the
        DROP would first delete its rows *with their ON DELETE CASCADE*: rebuilding
        ``connections`` would delete every conversation and message. The pragma is a
        no-op inside a transaction, so it is set on the driver's connection before the
        migrations' BEGIN, and set back after their commit (or rollback);
        :meth:`check_migrated` runs ``foreign_key_check`` before the commit instead."""
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            raw.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            try:
                yield conn
            finally:
                raw.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]

    def check_migrated(self, conn: Connection) -> None:
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise MigrationCheckFailed(
                f"the migration would leave {len(broken)} rows whose foreign keys point "
                f"nowhere, first in table {broken[0][0]}: nothing was committed"
            )

    def backup(self, engine: Engine, target: str) -> None:
        """SQLite's online backup API: a consistent snapshot, WAL content included, taken
        while the server keeps writing (a plain file copy of ``noclash.db`` misses what is
        still in ``noclash.db-wal``).

        The copy is written to a temporary file beside ``target`` and linked into place
        only once complete and on disk: a backup that fails half-way (a full disk) leaves
        no partial file that looks like a backup, nor one that blocks the retry. The link
        fails if ``target`` appeared meanwhile (:class:`BackupTargetExists`): a backup
        never overwrites."""
        directory, name = os.path.split(os.path.abspath(target))
        fd, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=directory)
        os.close(fd)
        try:
            with engine.connect() as conn:
                source = conn.connection.dbapi_connection
                destination = sqlite3.connect(partial)
                try:
                    source.backup(destination)  # type: ignore[union-attr]
                except sqlite3.Error as exc:  # the destination's: full, I/O error
                    raise BackupFailed(f"the backup failed: {driver_message(exc)}") from None
                finally:
                    destination.close()
            with open(partial, "rb+") as written:
                os.fsync(written.fileno())
            _place(partial, target)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(partial)

    def settle(self, engine: Engine) -> None:
        """Move everything in the WAL into the main file and truncate the WAL, so that after
        a clean stop ``noclash.db`` alone holds all the data."""
        engine.dispose()
        with engine.connect() as conn:
            # On the driver's connection, which is in autocommit: through SQLAlchemy the
            # statement would run inside the BEGIN IMMEDIATE of _on_begin, and a checkpoint
            # inside a transaction fails with "database table is locked".
            conn.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        engine.dispose()


def _in_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _path(url: URL) -> Path | None:
    """The file of a SQLite URL (a plain path or a ``file:`` URI), absolute."""
    database = url.database
    if _in_memory(url) or not database:
        return None
    if url.query.get("uri") and database.startswith("file:"):
        database = unquote(database[len("file:") :].split("?", 1)[0])
    return Path(os.path.abspath(database))


def _place(partial: str, target: str) -> None:
    """Give the complete file ``partial`` the name ``target`` unless that exists."""
    try:
        os.link(partial, target)  # atomic, and fails if the name is taken
    except FileExistsError:
        raise BackupTargetExists(f"{target} exists: choose a new file") from None
    except OSError:
        # A file system without hard links: check, then rename (not atomic against
        # another backup to the same name started in the same instant).
        if os.path.lexists(target):
            raise BackupTargetExists(f"{target} exists: choose a new file") from None
        os.rename(partial, target)
