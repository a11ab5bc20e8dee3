"""The contract every doctor dialect fulfils: catalog queries, SQL spellings, capabilities.

Shared code (checks, repairs, emitters) asks a capability flag or calls a method here; it
never tests the dialect's name. The portable behaviour lives in :class:`DoctorDialect`;
the SQLite and PostgreSQL modules override only what differs.
"""

from __future__ import annotations

import re
from typing import ClassVar

from sqlalchemy.engine import URL, Connection, Engine

from noclash.doctor.catalog import Catalog, Index, Table

UUID_RE = re.compile(
    r"^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$", re.I
)

# What each kind of statement locks, in the words a plan prints (PostgreSQL's lock levels;
# SQLite overrides with its one database lock).
LOCKS: dict[str, str] = {
    "update": "ROW EXCLUSIVE on the table and row locks on the changed rows",
    "alter": "ACCESS EXCLUSIVE briefly (catalog-only ALTER TABLE, no rewrite)",
    "not_null": "ACCESS EXCLUSIVE while SET NOT NULL scans the table",
    "concurrent": "SHARE UPDATE EXCLUSIVE during CREATE/DROP INDEX CONCURRENTLY "
    "(reads and writes continue)",
    "constraint": "SHARE UPDATE EXCLUSIVE + brief ACCESS EXCLUSIVE for ADD/DROP CONSTRAINT",
    "sequence": "none: setval takes no table lock (and is not undone by ROLLBACK)",
    "rebuild": "ACCESS EXCLUSIVE on the table while it is copied",
}


def is_uuid_text(value: object) -> bool:
    """Whether PostgreSQL's ``::uuid`` would accept ``value`` (the common spellings)."""
    return isinstance(value, str) and UUID_RE.match(value) is not None


def literal(value: str) -> str:
    """``value`` as an SQL string literal: quoted, its quotes doubled (the same in every
    engine the doctor supports, so not a dialect method)."""
    return "'" + value.replace("'", "''") + "'"


class DoctorDialect:
    """Portable behaviour; every method states what a subclass must answer."""

    name: ClassVar[str] = "base"
    # CREATE INDEX CONCURRENTLY: builds without blocking writes, but not in a transaction.
    supports_concurrent_index: ClassVar[bool] = False
    # ALTER TABLE ... ADD CONSTRAINT ... UNIQUE USING INDEX (attach a prebuilt index).
    supports_constraint_using_index: ClassVar[bool] = False
    # ALTER TABLE ... ALTER COLUMN ... SET DEFAULT.
    supports_alter_default: ClassVar[bool] = False
    # Sequences (serial/identity/nextval defaults) that can fall behind max(id).
    has_sequences: ClassVar[bool] = False
    # ALTER TABLE ... DROP CONSTRAINT; without it a UNIQUE written inside CREATE TABLE
    # goes only with a table rebuild.
    can_drop_table_constraint: ClassVar[bool] = False
    # UNIQUE ... NULLS NOT DISTINCT (one NULL at most, as in MongoDB's unique index).
    supports_nulls_not_distinct: ClassVar[bool] = False
    # amcheck's bt_index_check(..., checkunique) (PostgreSQL 17+ with the extension).
    supports_amcheck: ClassVar[bool] = False
    # Identifiers compare without regard to case even when quoted (SQLite); PostgreSQL folds
    # only unquoted names to lower case and compares quoted ones exactly.
    case_insensitive_names: ClassVar[bool] = False
    # ``varchar(n)`` refuses longer values (PostgreSQL); SQLite stores any length.
    enforces_length: ClassVar[bool] = False
    # An expression naming a row for evidence when the table has no primary key.
    evidence_row_id: ClassVar[str] = "rowid"
    # An expression naming a row for the whole repair transaction, or None when none is
    # stable (PostgreSQL's ctid moves when the row is updated).
    stable_row_id: ClassVar[str | None] = None

    def quote(self, conn: Connection, name: str) -> str:
        """``name`` quoted as SQL text to print and run as written.

        SQLAlchemy's quoting doubles a ``%`` for drivers whose parameters are ``%s``
        (psycopg); the doctor's statements run without parameters (:func:`~noclash.doctor.
        connect.run_sql`) or through ``text()``, which doubles it again, and are printed for
        people to copy: ``"100%% off"`` names no table (a run failed to read the catalog).
        """
        quoted = conn.dialect.identifier_preparer.quote(name)
        if conn.dialect.paramstyle in ("format", "pyformat"):
            quoted = quoted.replace("%%", "%")
        return quoted

    def table_sql(self, conn: Connection, table: Table) -> str:
        """The table's quoted, schema-qualified name for SQL."""
        q = self.quote(conn, table.name)
        return f"{self.quote(conn, table.schema)}.{q}" if table.schema else q

    def index_sql(self, conn: Connection, table: Table, index: str) -> str:
        """An index name for DROP/REINDEX: qualified by its table's schema (indexes live in
        their table's schema, which need not be on the search path)."""
        q = self.quote(conn, index)
        return f"{self.quote(conn, table.schema)}.{q}" if table.schema else q

    # -- connecting ------------------------------------------------------------------------
    def check_url(self, url: URL) -> None:
        """Refuse a URL the doctor must not open (raise ``CannotConnect``)."""

    def configure_engine(self, engine: Engine) -> None:
        """Install per-connection settings (events) on the doctor's engine."""

    def prepare(self, conn: Connection) -> None:
        """Per-connection set-up before any check runs (SQL functions, timeouts)."""

    def read_only(self, conn: Connection) -> None:
        """Make the current transaction refuse writes: the doctor must never change data."""

    def end_read_only(self, conn: Connection) -> None:
        """Undo :meth:`read_only` where it outlives the transaction (a pooled connection)."""

    def read_catalog(self, conn: Connection) -> Catalog:
        raise NotImplementedError

    # -- SQL spellings ---------------------------------------------------------------------
    def uuid_shaped(self, expr: str) -> str:
        """SQL predicate: ``expr`` (text) would cast to uuid."""
        raise NotImplementedError

    def uuid_shaped_sql(self, expr: str) -> str:
        """Like :meth:`uuid_shaped` but runnable by hand (printed in fixes and plans)."""
        return self.uuid_shaped(expr)

    def as_text(self, expr: str) -> str:
        return f"CAST({expr} AS TEXT)"

    def new_uuid4_sql(self, *, uuid_type: bool, hyphens: bool) -> str:
        """A SQL expression giving a fresh random UUIDv4 per row (text unless ``uuid_type``)."""
        raise NotImplementedError

    def uuid_default_sql(self, conn: Connection, table: Table, column: str) -> list[str]:
        """Statements that give ``column`` a UUIDv4 default for new rows ([] if impossible)."""
        return []

    def concurrently(self) -> str:
        """The keyword that builds or drops an index without blocking writes, if any."""
        return " CONCURRENTLY" if self.supports_concurrent_index else ""

    def backup_row_id(self, table: Table) -> str | None:
        """What names a row of ``table`` in its backup when it has no primary key; ``None``
        where nothing does beyond the transaction (PostgreSQL's ``ctid`` moves)."""
        return None

    def drop_unique_sql(self, conn: Connection, table: Table, index: Index) -> list[str]:
        """Statements that remove the uniqueness ``index`` enforces (index or constraint)."""
        if index.constraint:
            return [
                f"ALTER TABLE {self.table_sql(conn, table)} "
                f"DROP CONSTRAINT {self.quote(conn, index.constraint)}"
            ]
        return [
            f"DROP INDEX{self.concurrently()} IF EXISTS {self.index_sql(conn, table, index.name)}"
        ]

    def taken_names(self, conn: Connection, table: Table) -> set[str]:
        """Names an index built on ``table`` may not take: every object sharing the index
        namespace (and, where a unique index becomes a constraint, the table's constraint
        names), folded with :meth:`fold_name`."""
        raise NotImplementedError

    def fold_name(self, name: str) -> str:
        """``name`` as the engine compares it (lower case where case does not matter)."""
        return name.lower() if self.case_insensitive_names else name

    def unique_conflict(self, table: Table, index: Index) -> str | None:
        """How the engine resolves an insert that conflicts with ``index``, when the schema
        says something other than raising an error (SQLite's ``ON CONFLICT REPLACE``)."""
        return None

    def grant_select_sql(self, sequence_sql: str, role: str | None) -> str:
        return f"GRANT SELECT ON SEQUENCE {sequence_sql} TO {role or 'CURRENT_USER'}"

    # -- repairs ---------------------------------------------------------------------------
    def locks(self, *kinds: str) -> str:
        """What statements of these kinds lock, for the plan."""
        return "; ".join(LOCKS[k] for k in kinds)

    def verify_integrity(self, conn: Connection) -> list[str]:
        """Problems a repair left that the engine does not refuse by itself (SQLite: foreign
        keys are checked only when enabled, so a rebuild must run ``foreign_key_check``)."""
        return []
