"""The portable contract every dialect fulfils.

Subclasses override only what differs and state each capability as a flag with a comment.
SQL that differs is a class attribute; dialect-specific imports (the ``insert`` that knows
``on_conflict_do_nothing``) stay inside the dialect modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from sqlalchemy import Table
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

# Execution option marking a connection that only reads (see noclash.db.engine.read_only).
READ_ONLY_OPTION = "noclash_read_only"



# Every engine noclash makes. SQLAlchemy writes a failed statement's parameters into the
# exception's text, and the API and the dispatcher log database errors: a webhook secret,
# an access token or a customer's message would be written to the logs with them.
ENGINE_OPTIONS: dict[str, object] = {"hide_parameters": True}

class UnsupportedDialect(Exception):
    """The database is neither SQLite nor PostgreSQL, or its URL names a driver or a kind of
    database noclash cannot use (the message says what to write instead)."""


class DatabaseUnavailable(Exception):
    """The database cannot be opened: missing, unreadable, not a database, unreachable.
    The message is one line for an operator, without SQL or parameters."""


def driver_message(exc: BaseException) -> str:
    """The driver's own message for ``exc`` on one line: SQLAlchemy's wrapper adds the
    statement, its parameters and a link, and libpq's messages span lines."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split()) or type(orig).__name__


@dataclass(frozen=True)
class DriverUniqueError:
    """What the driver says about a unique violation, before mapping it to metadata.

    PostgreSQL names the constraint (``diag.constraint_name``), the table and, in its
    detail (``Key (a, b)=(...) already exists``), the columns; SQLite names the table and
    columns (``UNIQUE constraint failed: t.a, t.b``) or, for an expression index, the
    index (``UNIQUE constraint failed: index 'ix'``).
    """

    table: str | None
    columns: tuple[str, ...]
    constraint: str | None
    message: str


class NotificationSession(Protocol):
    """A database session of its own for LISTEN/NOTIFY (see
    :meth:`Dialect.notification_session`)."""

    # The server's id of this session: a notification names the session that sent it.
    session_id: int

    def send(self, channel: str, payload: str) -> None:
        """Notify ``channel`` now (the session is in autocommit: one tiny transaction)."""

    def listen(self, channel: str) -> None:
        """Receive ``channel``'s notifications on this session from now on."""

    def receive(self, timeout: float) -> Iterator[tuple[int, str]]:
        """``(sender session id, payload)`` of each notification as it arrives, for up to
        ``timeout`` seconds."""
        ...

    def close(self) -> None: ...


class Dialect:
    """Behaviour shared by every supported database; subclasses override what differs."""

    name: ClassVar[str] = "base"
    # The server fills a UUIDv4 column from its default (``gen_random_uuid()``), so an
    # INSERT ... RETURNING gets the value without the application generating it.
    server_generates_uuid4: ClassVar[bool] = False
    # The database is a file this process opens itself, not a server shared with others:
    # `noclash serve` migrates it and creates a local admin unless told otherwise.
    embedded: ClassVar[bool] = False
    # INSERT/UPDATE inside a WITH clause (one round trip for two writes).
    supports_dml_in_cte: ClassVar[bool] = False
    # The server carries notifications between sessions (LISTEN/NOTIFY), so a process can
    # wake the event readers of other processes right after a commit
    # (noclash.chat.wakeups). Without it, readers elsewhere find new events by re-reading.
    supports_listen_notify: ClassVar[bool] = False
    # The driver has an asyncio interface that SQLAlchemy runs on the event loop itself
    # (create_async_engine): a caller on the loop can use the database without handing
    # the work to a thread (see async_engine).
    supports_async_driver: ClassVar[bool] = False
    # Parameters can be arrays that a statement turns into rows (``unnest``): a batch of
    # rows is one statement executed once, instead of one execution per row.
    supports_array_binds: ClassVar[bool] = False
    # The one DBAPI driver noclash speaks to this database (SQLAlchemy's driver name): the
    # per-connection settings and error parsing are written for it alone.
    driver: ClassVar[str] = ""

    # -- statements -------------------------------------------------------------------------
    def insert(self, table: Table) -> Any:
        """An INSERT construct that supports ``on_conflict_do_nothing``."""
        raise NotImplementedError

    def binary_parameters(self, sql: str) -> str:
        """``sql`` (as compiled for this dialect's driver) with its parameters sent in the
        driver's binary format where it has one: for statements that bind large arrays,
        whose text form the driver may build element by element."""
        return sql

    # -- errors -----------------------------------------------------------------------------
    def unique_error(self, exc: BaseException) -> DriverUniqueError | None:
        """Parse a DBAPI exception; ``None`` when it is not a unique violation (or not this
        dialect's driver: ``APP_DIALECTS.every()`` asks each in turn)."""
        raise NotImplementedError

    def is_foreign_key_violation(self, exc: BaseException) -> bool:
        """True when the DBAPI exception ``exc`` says a referenced row does not exist: a
        row written beside a concurrent DELETE of its parent (``False`` for another
        dialect's driver, as for :meth:`unique_error`)."""
        return False

    def is_read_only(self, exc: BaseException) -> bool:
        """True when the DBAPI exception ``exc`` says the database accepts no writes now
        (a PostgreSQL hot standby or ``default_transaction_read_only``, a SQLite file its
        process may not write): nothing was stored, and the same request succeeds once
        writes are accepted again (a failover ends, the operator lifts it). ``False`` for
        another dialect's driver, as for :meth:`unique_error`."""
        return False

    def accepts_writes(self, conn: Connection) -> bool:
        """Whether a transaction this session begins may write (``/readyz`` asks, so a load
        balancer stops sending to a database that refuses every write). True by default:
        SQLite says so only when a write is tried."""
        return True

    # -- lock waits -------------------------------------------------------------------------
    def limit_lock_wait(self, conn: Connection, seconds: float | None) -> None:
        """Bound how long this transaction's next statements wait for a row or index lock
        (``None``: the server's default again). Nothing to do by default: SQLite's writers
        queue for the database lock at ``BEGIN IMMEDIATE``, bounded by the busy timeout."""

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """True when the driver error ``exc`` ended a wait bounded by limit_lock_wait."""
        return False

    # -- engines and migrations -------------------------------------------------------------
    def check_url(self, url: URL) -> None:
        """Raise :class:`UnsupportedDialect` for a URL of this database that noclash cannot
        use: another driver (its settings and error parsing are the wrong ones, or it is
        not installed and the error would be an ImportError)."""
        if url.get_driver_name() != self.driver:
            raise UnsupportedDialect(
                f"noclash connects to {self.name} with {self.driver}, not "
                f"{url.get_driver_name()}: write the URL as {self.name}://..."
            )

    def must_exist(self, url: URL) -> URL:
        """``url``, opened so that a database that does not exist is an error instead of
        being created: for commands that only make sense on an existing database (a typo
        in a path must not back up, or list the users of, a new empty file). A server
        never creates a database on connect, so by default the URL is unchanged."""
        return url

    def open_error(self, exc: BaseException, url: URL) -> str:
        """One line for an operator about ``exc``, raised while opening ``url``."""
        return f"cannot open the database: {driver_message(exc)}"

    def engine_options(self, *, pool_size: int, max_overflow: int, busy_timeout_ms: int) -> dict:
        """Keyword arguments for :func:`sqlalchemy.create_engine` (each dialect adds its
        own to these)."""
        return dict(ENGINE_OPTIONS)

    def configure_engine(
        self, engine: Engine, *, busy_timeout_ms: int, lock_timeout_ms: int = 0
    ) -> None:
        """Install per-connection settings (events) on a new engine. ``busy_timeout_ms``
        bounds SQLite's wait for its write lock, ``lock_timeout_ms`` a server's wait for
        row and table locks (0: unbounded); each dialect uses the one it has."""

    def lock_for_migrations(self, conn: Connection) -> None:
        """Serialise concurrent migration runs from several processes (same transaction)."""

    def lock_for_sequencing(self, conn: Connection) -> None:
        """Serialise the transactions that give events their ``seq`` (same transaction):
        two sequencers numbering at once could give a later-committed batch lower numbers
        than one a reader has already passed. Nothing to do by default: SQLite's writers
        already hold the one write lock from ``BEGIN IMMEDIATE``."""

    def async_engine(
        self, engine: Engine, *, pool_size: int, max_overflow: int, pre_ping: bool = True
    ) -> AsyncEngine:
        """A new engine on ``engine``'s database through the driver's asyncio interface,
        with a pool of its own (``pre_ping``: test each connection as it leaves the pool).
        Only where :attr:`supports_async_driver`."""
        raise NotImplementedError(f"{self.name} has no asyncio driver")

    def nonblocking_engine(self, engine: Engine) -> Engine | None:
        """An engine on ``engine``'s database (one connection) whose transactions never
        wait: one that would wait for the database's write lock fails at once
        (:meth:`is_busy`), and its commits never wait for the disk (no checkpoint:
        :meth:`checkpoint` does that work elsewhere). Its work can run on an event loop,
        falling back to a worker thread when busy. None where the database has an asyncio
        driver instead, or no such mode."""
        return None

    def is_busy(self, exc: BaseException) -> bool:
        """True when the driver error ``exc`` says a :meth:`nonblocking_engine` transaction
        would have had to wait."""
        return False

    def checkpoint(self, engine: Engine) -> None:
        """Move what the write-ahead log holds into the main file without waiting for
        anyone (the work a :meth:`nonblocking_engine` skips); a worker thread's job."""

    def notification_session(self, engine: Engine) -> NotificationSession:
        """A new driver connection of its own, outside ``engine``'s pool and in autocommit,
        for LISTEN/NOTIFY: a NOTIFY sent on it is its own transaction, never part of a
        writer's, and a LISTEN lasts as long as the session. Only where
        :attr:`supports_listen_notify`."""
        raise NotImplementedError(f"{self.name} has no LISTEN/NOTIFY")

    @contextmanager
    def migration_connection(self, engine: Engine) -> Iterator[Connection]:
        """The connection migrations run on, set up before their transaction begins."""
        with engine.connect() as conn:
            yield conn

    def check_migrated(self, conn: Connection) -> None:
        """Check, just before the migrations commit, what the run left unchecked."""

    # -- operations ---------------------------------------------------------------------------
    def backup(self, engine: Engine, target: str) -> None:
        """Write a consistent copy of the whole database to the file ``target``.

        Raises :class:`BackupNotSupported` (with what to use instead) where the engine has its
        own tool for this.
        """
        raise BackupNotSupported(f"noclash cannot back up a {self.name} database itself")

    def settle(self, engine: Engine) -> None:
        """Leave the database complete in its main file after a clean stop."""


class MigrationCheckFailed(Exception):
    """A migration run would leave the database inconsistent; nothing was committed."""


class BackupNotSupported(Exception):
    """This engine is backed up with its own tools; the message says which."""


class BackupFailed(Exception):
    """The copy could not be written (a full disk, an I/O error); nothing was left at the
    target. The message is one line."""


class BackupTargetExists(Exception):
    """The backup's file appeared while it was being written; it was left alone."""
