"""The portable contract every dialect fulfils.

Subclasses override only what differs and state each capability as a flag with a comment.
SQL that differs is a class attribute; dialect-specific imports (the ``insert`` that knows
``on_conflict_do_nothing``) stay inside the dialect modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import Index, Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

# Execution option marking a connection that only reads (see noclash.db.engine.read_only).
READ_ONLY_OPTION = "noclash_read_only"


class UnsupportedDialect(Exception):
    """The database is neither SQLite nor PostgreSQL."""


@dataclass(frozen=True)
class DriverUniqueError:
    """What the driver says about a unique violation, before mapping it to metadata.

    PostgreSQL names the constraint (``diag.constraint_name``) and the table; SQLite names
    the table and columns (``UNIQUE constraint failed: t.a, t.b``) or, for an expression
    index, the index (``UNIQUE constraint failed: index 'ix'``).
    """

    table: str | None
    columns: tuple[str, ...]
    constraint: str | None
    message: str


class Dialect:
    """Behaviour shared by every supported database; subclasses override what differs."""

    name: ClassVar[str] = "base"
    # The server fills a UUIDv4 column from its default (``gen_random_uuid()``), so an
    # INSERT ... RETURNING gets the value without the application generating it.
    server_generates_uuid4: ClassVar[bool] = False
    # A failed statement aborts the whole transaction, so a retry needs a SAVEPOINT.
    error_aborts_transaction: ClassVar[bool] = False
    # INSERT/UPDATE inside a WITH clause (one round trip for two writes).
    supports_dml_in_cte: ClassVar[bool] = False
    # CREATE INDEX CONCURRENTLY and friends.
    supports_concurrent_index_build: ClassVar[bool] = False
    # The schema's trigger moves a conversation's last_message_at forward (and wakes a
    # snooze) on every message INSERT (migration 0003), so no statement of ours has to.
    messages_move_conversations: ClassVar[bool] = False

    # -- statements -------------------------------------------------------------------------
    def insert(self, table: Table) -> Any:
        """An INSERT construct that supports ``on_conflict_do_nothing``."""
        raise NotImplementedError

    def index_where(self, index: Index) -> ColumnElement[bool] | None:
        """The WHERE predicate of a partial index, as declared for this dialect."""
        return index.dialect_options[self.name].get("where")

    # -- errors -----------------------------------------------------------------------------
    def unique_error(self, exc: BaseException) -> DriverUniqueError | None:
        """Parse a DBAPI exception; ``None`` when it is not a unique violation."""
        raise NotImplementedError

    # -- lock waits -------------------------------------------------------------------------
    def limit_lock_wait(self, conn: Connection, seconds: float | None) -> None:
        """Bound how long this transaction's next statements wait for a row or index lock
        (``None``: the server's default again). Nothing to do by default: SQLite's writers
        queue for the database lock at ``BEGIN IMMEDIATE``, bounded by the busy timeout."""

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """True when the driver error ``exc`` ended a wait bounded by limit_lock_wait."""
        return False

    # -- engines and migrations -------------------------------------------------------------
    def engine_options(self, *, pool_size: int, max_overflow: int, busy_timeout_ms: int) -> dict:
        """Keyword arguments for :func:`sqlalchemy.create_engine`."""
        return {}

    def configure_engine(self, engine: Engine, *, busy_timeout_ms: int) -> None:
        """Install per-connection settings (events) on a new engine."""

    def lock_for_migrations(self, conn: Connection) -> None:
        """Serialise concurrent migration runs from several processes (same transaction)."""
