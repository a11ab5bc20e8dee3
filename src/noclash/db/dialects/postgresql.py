"""PostgreSQL: production, and the road to scale."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import Table, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from noclash.db.dialects.base import (
    BackupNotSupported,
    Dialect,
    DriverUniqueError,
    NotificationSession,
)

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
LOCK_NOT_AVAILABLE = "55P03"
# read_only_sql_transaction: a write on a hot standby, or in a database, role or session
# whose default_transaction_read_only is on.
READ_ONLY_SQL_TRANSACTION = "25006"
# Where a pooled connection remembers the lock_timeout it was given (configure_engine).
LOCK_TIMEOUT_INFO = "noclash_lock_timeout_ms"
# The columns in a unique violation's detail: ``Key (a, b)=(1, 2) already exists.``
_DETAIL_KEY = re.compile(r"Key \((?P<cols>[^)]*)\)=")
# A pyformat placeholder, or an escaped percent sign (kept as it is).
_PYFORMAT = re.compile(r"%%|%\((\w+)\)s")


# libpq settings of the session that sends and listens for notifications (see
# notification_session).
NOTIFICATION_SESSION_TCP = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class PostgreSQLDialect(Dialect):
    name: ClassVar[str] = "postgresql"
    # gen_random_uuid() is built in since PostgreSQL 13.
    server_generates_uuid4: ClassVar[bool] = True
    # WITH s AS (INSERT ... RETURNING) INSERT ...: two writes, one round trip.
    supports_dml_in_cte: ClassVar[bool] = True
    # LISTEN/NOTIFY: a notification reaches every session listening on its channel, in any
    # process, after the notifying transaction commits.
    supports_listen_notify: ClassVar[bool] = True
    # psycopg 3 speaks asyncio (AsyncConnection; SQLAlchemy's postgresql+psycopg_async).
    supports_async_driver: ClassVar[bool] = True
    # unnest(%(ids)s::uuid[], ...): psycopg sends a Python list as an array.
    supports_array_binds: ClassVar[bool] = True
    # psycopg 3 (noclash.config.normalise_database_url turns postgresql:// into it).
    driver: ClassVar[str] = "psycopg"

    # Any constant works; this one spells "noclash" in ASCII, to be recognisable in pg_locks.
    MIGRATION_LOCK_KEY: ClassVar[int] = 0x6E6F636C617368
    # The events sequencer's lock (noclash.chat.events.sequence): "noclash" + 1.
    SEQUENCE_LOCK_KEY: ClassVar[int] = 0x6E6F636C617369

    def insert(self, table: Table) -> Any:
        return pg_insert(table)

    def binary_parameters(self, sql: str) -> str:
        # psycopg's %(name)b: the value goes in binary. A list's text form is quoted
        # element by element with regular expressions in Python: 10.8 us per row of eight
        # fields, against 2.0 us in binary.
        return _PYFORMAT.sub(lambda m: f"%({m[1]})b" if m[1] else m[0], sql)

    def unique_error(self, exc: BaseException) -> DriverUniqueError | None:
        if getattr(exc, "sqlstate", None) != UNIQUE_VIOLATION:
            return None
        diag = getattr(exc, "diag", None)
        detail = getattr(diag, "message_detail", None) or ""
        found = _DETAIL_KEY.search(detail)
        columns = tuple(c.strip().strip('"') for c in found["cols"].split(",")) if found else ()
        return DriverUniqueError(
            table=getattr(diag, "table_name", None),
            columns=columns,
            constraint=getattr(diag, "constraint_name", None),
            message=str(exc).strip(),
        )

    def is_foreign_key_violation(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == FOREIGN_KEY_VIOLATION

    def is_read_only(self, exc: BaseException) -> bool:
        # psycopg raises it as an InternalError (SQLSTATE class 25, "invalid transaction
        # state"), which nothing else maps to a 503.
        return getattr(exc, "sqlstate", None) == READ_ONLY_SQL_TRANSACTION

    def accepts_writes(self, conn: Connection) -> bool:
        # A hot standby is in recovery; default_transaction_read_only is the setting an
        # operator (or a failover tool) uses to stop writes on a primary. The session's
        # own setting, not transaction_read_only: the probe's transaction may be read-only.
        return not conn.exec_driver_sql(
            "SELECT pg_is_in_recovery() OR current_setting('default_transaction_read_only')::bool"
        ).scalar_one()

    def limit_lock_wait(self, conn: Connection, seconds: float | None) -> None:
        # SET LOCAL: the bound ends with the transaction, whatever happens to it. None
        # goes back to the connection's own bound (configure_engine): SET LOCAL ... DEFAULT
        # would mean the server's default, no bound at all, for the rest of the transaction.
        if seconds is None:
            value = str(conn.connection.info.get(LOCK_TIMEOUT_INFO, "DEFAULT"))
        else:
            value = str(max(1, round(seconds * 1000)))
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {value}")

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == LOCK_NOT_AVAILABLE

    def engine_options(self, *, pool_size: int, max_overflow: int, busy_timeout_ms: int) -> dict:
        return {
            **super().engine_options(
                pool_size=pool_size, max_overflow=max_overflow, busy_timeout_ms=busy_timeout_ms
            ),
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_pre_ping": True,
        }

    def configure_engine(
        self, engine: Engine, *, busy_timeout_ms: int, lock_timeout_ms: int = 0
    ) -> None:
        """Bound every session's lock waits at ``lock_timeout_ms`` (0: leave them unbounded).

        Why: PostgreSQL waits for a row or table lock as long as its holder keeps it, and
        by default forever. A transaction left open by another client (a psql session, a
        stuck job, an ``idle in transaction`` connection) on a row a request must lock held
        that request, its pool connection and its thread for as long; the next requests for
        that row queued behind it until the pool was empty and every route timed out. With
        the bound the wait fails with SQLSTATE 55P03, a 503 with ``Retry-After``
        (:mod:`noclash.api.errors`), rolled back like any failed request; a keyed create
        then keeps no key and its retry runs anew.

        Session-level ``SET`` once per new connection (no round trip per transaction),
        committed at once; the value is kept in the pool record so that
        :meth:`limit_lock_wait` can return to it. The migrations' connection waits
        unbounded (:meth:`migration_connection`), as before.
        """
        if lock_timeout_ms <= 0:
            return

        @event.listens_for(engine, "connect")
        def _bound_lock_waits(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
            dbapi_conn.commit()
            record.info[LOCK_TIMEOUT_INFO] = int(lock_timeout_ms)

    @contextmanager
    def migration_connection(self, engine: Engine) -> Iterator[Connection]:
        """A connection whose lock waits are unbounded while migrations run: a migration
        waits its turn behind another process's (the advisory lock) and for the tables it
        alters, however long, as ``noclash db upgrade`` always has. Its bound is set back
        afterwards, before the connection returns to the pool."""
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            bound = conn.connection.info.get(LOCK_TIMEOUT_INFO)
            if bound is None:
                yield conn
                return
            _set_session(raw, "lock_timeout = 0")
            try:
                yield conn
            finally:
                if not conn.invalidated:
                    _set_session(raw, f"lock_timeout = {int(bound)}")

    def lock_for_migrations(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.MIGRATION_LOCK_KEY})

    def lock_for_sequencing(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.SEQUENCE_LOCK_KEY})

    def async_engine(
        self, engine: Engine, *, pool_size: int, max_overflow: int, pre_ping: bool = True
    ) -> AsyncEngine:
        options = self.engine_options(
            pool_size=pool_size, max_overflow=max_overflow, busy_timeout_ms=0
        )
        options["pool_pre_ping"] = pre_ping
        return create_async_engine(engine.url.set(drivername="postgresql+psycopg_async"), **options)

    def notification_session(self, engine: Engine) -> NotificationSession:
        # The engine's own connect arguments (host, credentials, options), without its pool:
        # this session is held for the life of the process and must not take a pool slot.
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        # Held for hours and mostly idle: a connection that died without a reset (a host
        # gone, a NAT that forgot it) is found by TCP keepalives in about a minute, not
        # by the kernel's retries in a quarter of an hour, and a connect that hangs gives
        # up. The URL's own settings win.
        for name, value in NOTIFICATION_SESSION_TCP.items():
            cparams.setdefault(name, value)
        raw = engine.dialect.connect(*cargs, **cparams)
        try:
            raw.autocommit = True
            # A NOTIFY stores nothing: its commit need not wait for the disk. A durable
            # one would flush the WAL once per NOTIFY, hundreds of times a second, and
            # writers' commits would queue behind those flushes. Lost in a crash, it costs
            # readers one periodic re-read, as a notification lost in a reconnect does.
            raw.execute("SET synchronous_commit = off")
            return _PgNotificationSession(raw)
        except BaseException:
            raw.close()
            raise

    def backup(self, engine: Engine, target: str) -> None:
        raise BackupNotSupported(
            "back up PostgreSQL with its own tools: "
            f"pg_dump --format=custom --file {target} <database URL> "
            "(restore with pg_restore), or continuous archiving for point-in-time recovery; "
            "see docs/deployment.md"
        )


def _set_session(raw: Any, setting: str) -> None:
    """``SET setting`` for the session, on the driver's connection outside any transaction
    of SQLAlchemy's (committed at once, so it outlives whatever follows)."""
    raw.execute(f"SET {setting}")
    raw.commit()


class _PgNotificationSession:
    """A psycopg 3 connection in autocommit, used only for LISTEN/NOTIFY."""

    def __init__(self, raw: Any) -> None:
        self._conn = raw
        self.session_id: int = raw.info.backend_pid

    def send(self, channel: str, payload: str) -> None:
        # pg_notify() takes the channel and payload as parameters (NOTIFY does not).
        self._conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def listen(self, channel: str) -> None:
        from psycopg import sql

        self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def receive(self, timeout: float) -> Iterator[tuple[int, str]]:
        for notification in self._conn.notifies(timeout=timeout):
            yield notification.pid, notification.payload

    def close(self) -> None:
        self._conn.close()
