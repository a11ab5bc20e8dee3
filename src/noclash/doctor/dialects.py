"""Per-dialect behaviour of the doctor: catalog queries, SQL spellings and capabilities.

Shared code (checks, repairs) asks a capability flag or calls a method here; it never tests
the dialect's name. The portable behaviour lives in :class:`DoctorDialect`; the SQLite and
PostgreSQL classes override only what differs. This is separate from
:mod:`noclash.db.dialects` because the doctor inspects databases of any schema, not only
noclash's own, and must stay usable without noclash's application code.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, ClassVar

from sqlalchemy.engine import Connection, Engine

from noclash.doctor.catalog import (
    IGNORED_TABLES,
    Catalog,
    Column,
    Constraint,
    Index,
    Sequence,
    Table,
)

UUID_RE = re.compile(
    r"^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$", re.I
)


def is_uuid_text(value: object) -> bool:
    """Whether PostgreSQL's ``::uuid`` would accept ``value`` (the common spellings)."""
    return isinstance(value, str) and UUID_RE.match(value) is not None


class DoctorDialect:
    """Portable behaviour; every method states what a subclass must answer."""

    name: ClassVar[str] = "base"
    # CREATE INDEX CONCURRENTLY: builds without blocking writes, but not in a transaction.
    supports_concurrent_index: ClassVar[bool] = False
    # ALTER TABLE ... ADD CONSTRAINT ... UNIQUE USING INDEX (attach a prebuilt index).
    supports_constraint_using_index: ClassVar[bool] = False
    # ALTER TABLE ... ALTER COLUMN ... SET NOT NULL without rebuilding the table.
    supports_alter_not_null: ClassVar[bool] = False
    # ALTER TABLE ... ALTER COLUMN ... SET DEFAULT.
    supports_alter_default: ClassVar[bool] = False
    # Sequences (serial/identity) that can fall behind max(id).
    has_sequences: ClassVar[bool] = False
    # Dropping a UNIQUE declared inside CREATE TABLE needs a table rebuild.
    can_drop_table_constraint: ClassVar[bool] = False

    def quote(self, conn: Connection, name: str) -> str:
        return conn.dialect.identifier_preparer.quote(name)

    def table_sql(self, conn: Connection, table: Table) -> str:
        """The table's quoted, schema-qualified name for SQL."""
        q = self.quote(conn, table.name)
        return f"{self.quote(conn, table.schema)}.{q}" if table.schema else q

    def prepare(self, conn: Connection) -> None:
        """Per-connection set-up before any check runs (SQL functions, timeouts)."""

    def read_only(self, conn: Connection) -> None:
        """Make the current transaction refuse writes: the doctor must never change data."""

    def end_read_only(self, conn: Connection) -> None:
        """Undo :meth:`read_only` where it outlives the transaction (a pooled connection)."""

    def read_catalog(self, conn: Connection) -> Catalog:
        raise NotImplementedError

    def uuid_shaped(self, expr: str) -> str:
        """SQL predicate: ``expr`` (text) would cast to uuid."""
        raise NotImplementedError

    def as_text(self, expr: str) -> str:
        return f"CAST({expr} AS TEXT)"

    def uuid_shaped_sql(self, expr: str) -> str:
        """Like :meth:`uuid_shaped` but runnable by hand (printed in fixes and plans)."""
        return self.uuid_shaped(expr)

    def not_null_guard_sql(self, conn: Connection, table: Table, column: str) -> list[str]:
        """Statements that make ``column`` refuse NULL from now on."""
        t = self.table_sql(conn, table)
        return [f"ALTER TABLE {t} ALTER COLUMN {self.quote(conn, column)} SET NOT NULL"]

    def uuid_default_sql(self, conn: Connection, table: Table, column: str) -> list[str]:
        """Statements that give ``column`` a UUIDv4 default for new rows ([] if impossible)."""
        return []


class SQLiteDoctor(DoctorDialect):
    name: ClassVar[str] = "sqlite"

    def prepare(self, conn: Connection) -> None:
        # No regexp in SQLite: register the same test the PostgreSQL regex performs.
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.create_function(
            "noclash_is_uuid", 1, lambda v: int(is_uuid_text(v)), deterministic=True
        )

    def read_only(self, conn: Connection) -> None:
        # A connection setting, not a transaction one: end_read_only turns it off again.
        conn.exec_driver_sql("PRAGMA query_only = ON")

    def end_read_only(self, conn: Connection) -> None:
        conn.exec_driver_sql("PRAGMA query_only = OFF")

    def uuid_shaped(self, expr: str) -> str:
        return f"noclash_is_uuid({expr})"

    def uuid_shaped_sql(self, expr: str) -> str:
        # Without the doctor's function: 32 hex digits once hyphens are removed.
        bare = f"replace(lower({expr}), '-', '')"
        return f"(length({bare}) = 32 AND NOT {bare} GLOB '*[^0-9a-f]*')"

    def not_null_guard_sql(self, conn: Connection, table: Table, column: str) -> list[str]:
        # SQLite cannot add NOT NULL without rebuilding the table; two triggers refuse NULL
        # (and the empty string) on INSERT and UPDATE instead, which is the same guarantee.
        t, c = self.table_sql(conn, table), self.quote(conn, column)
        out = []
        for event in ("INSERT", "UPDATE"):
            name = self.quote(conn, f"noclash_{table.name}_{column}_not_null_{event.lower()}")
            of = f" OF {c}" if event == "UPDATE" else ""
            out.append(
                f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {event}{of} ON {t} "
                f"WHEN NEW.{c} IS NULL OR NEW.{c} = '' "
                f"BEGIN SELECT RAISE(ABORT, '{table.name}.{column} may not be NULL'); END"
            )
        return out

    def read_catalog(self, conn: Connection) -> Catalog:
        catalog = Catalog(dialect=self.name, server_version=sqlite3.sqlite_version_info)
        rows = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
        ).all()
        index_sql = dict(
            conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'").all()
        )
        for name, create_sql in rows:
            if name in IGNORED_TABLES:
                continue
            table = Table(name=name, schema=None)
            qn = self.quote(conn, name)
            for _cid, cname, ctype, notnull, dflt, pk in conn.exec_driver_sql(
                f"PRAGMA table_info({qn})"
            ).all():
                table.columns[cname] = Column(
                    name=cname,
                    type=ctype or "",
                    nullable=not notnull and not pk,
                    default=dflt,
                    primary_key=bool(pk),
                )
            pk_cols = [
                r[1]
                for r in sorted(
                    conn.exec_driver_sql(f"PRAGMA table_info({qn})").all(), key=lambda r: r[5]
                )
                if r[5]
            ]
            for _seq, iname, unique, origin, partial in conn.exec_driver_sql(
                f"PRAGMA index_list({qn})"
            ).all():
                keys = [
                    r
                    for r in conn.exec_driver_sql(
                        f"PRAGMA index_xinfo({self.quote(conn, iname)})"
                    ).all()
                    if r[5]
                ]
                cols: tuple[str | None, ...] = tuple(r[2] if r[1] >= 0 else None for r in keys)
                sql_text = index_sql.get(iname) or ""
                predicate = None
                if partial:
                    m = re.search(r"\bWHERE\b(.*)$", sql_text, re.I | re.S)
                    predicate = m.group(1).strip() if m else "?"
                table.indexes.append(
                    Index(
                        name=iname,
                        table=name,
                        columns=cols,
                        unique=bool(unique),
                        primary=origin == "pk",
                        predicate=predicate,
                        constraint=iname if origin in ("u", "pk") else None,
                        definition=sql_text,
                    )
                )
            if pk_cols and not any(ix.primary for ix in table.indexes):
                # INTEGER PRIMARY KEY is the rowid: unique without an index of its own.
                table.indexes.append(
                    Index(
                        name=f"{name}_pkey",
                        table=name,
                        columns=tuple(pk_cols),
                        unique=True,
                        primary=True,
                        constraint=f"{name}_pkey",
                        definition="(rowid alias)",
                    )
                )
            if create_sql and re.search(r"\bCHECK\b", create_sql, re.I):
                table.constraints.append(Constraint("check", name, "check", create_sql))
            catalog.tables[name] = table
        return catalog


class PostgreSQLDoctor(DoctorDialect):
    name: ClassVar[str] = "postgresql"
    supports_concurrent_index: ClassVar[bool] = True
    supports_constraint_using_index: ClassVar[bool] = True
    supports_alter_not_null: ClassVar[bool] = True
    supports_alter_default: ClassVar[bool] = True
    has_sequences: ClassVar[bool] = True
    can_drop_table_constraint: ClassVar[bool] = True

    _TABLES: ClassVar[str] = """
        SELECT c.oid, n.nspname, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
        ORDER BY n.nspname, c.relname"""
    _COLUMNS: ClassVar[str] = """
        SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity <> '', t.typtype, a.atttypid
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attrelid, a.attnum"""
    _INDEXES: ClassVar[str] = """
        SELECT ix.indrelid, i.relname, ix.indisunique, ix.indisprimary, ix.indisvalid,
               ix.indisready, pg_get_expr(ix.indpred, ix.indrelid), {nnd}, am.amname,
               pg_get_indexdef(ix.indexrelid), con.conname,
               ARRAY(SELECT a.attname FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(n, o)
                     LEFT JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.n
                     WHERE k.o <= ix.indnkeyatts ORDER BY k.o),
               EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                       WHERE p.index_relid = ix.indexrelid OR
                             (p.relid = ix.indrelid AND p.index_relid = 0))
        FROM pg_index ix
        JOIN pg_class i ON i.oid = ix.indexrelid
        JOIN pg_am am ON am.oid = i.relam
        LEFT JOIN pg_constraint con
          ON con.conindid = ix.indexrelid AND con.conrelid = ix.indrelid
         AND con.contype IN ('p', 'u', 'x')
        WHERE ix.indrelid = ANY(%(oids)s)
        ORDER BY ix.indrelid, i.relname"""
    _CONSTRAINTS: ClassVar[str] = """
        SELECT conrelid, conname, contype, pg_get_constraintdef(oid), convalidated
        FROM pg_constraint WHERE conrelid = ANY(%(oids)s) ORDER BY conrelid, conname"""
    _SEQUENCES: ClassVar[str] = """
        SELECT sn.nspname, s.relname, t.oid, a.attname, ps.last_value, ps.start_value,
               ps.increment_by, has_sequence_privilege(s.oid, 'SELECT')
        FROM pg_depend d
        JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_namespace sn ON sn.oid = s.relnamespace
        JOIN pg_class t ON t.oid = d.refobjid
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        LEFT JOIN pg_sequences ps ON ps.schemaname = sn.nspname AND ps.sequencename = s.relname
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.deptype IN ('a', 'i') AND t.oid = ANY(%(oids)s)
        ORDER BY sn.nspname, s.relname"""
    _KINDS: ClassVar[dict[str, str]] = {
        "c": "check",
        "f": "foreign key",
        "u": "unique",
        "p": "primary key",
        "x": "exclusion",
        "n": "not null",
        "t": "trigger",
    }

    def read_only(self, conn: Connection) -> None:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    def uuid_shaped(self, expr: str) -> str:
        return f"({expr} ~* '{UUID_RE.pattern}')"

    def as_text(self, expr: str) -> str:
        return f"({expr})::text"

    def uuid_default_sql(self, conn: Connection, table: Table, column: str) -> list[str]:
        col = table.columns[column]
        value = "gen_random_uuid()" if col.is_uuid else "gen_random_uuid()::text"
        return [
            f"ALTER TABLE {self.table_sql(conn, table)} "
            f"ALTER COLUMN {self.quote(conn, column)} SET DEFAULT {value}"
        ]

    def read_catalog(self, conn: Connection) -> Catalog:
        raw: Any = conn.connection.driver_connection
        version = raw.info.server_version  # e.g. 180001
        catalog = Catalog(dialect=self.name, server_version=(version // 10000, version % 10000))
        current = conn.exec_driver_sql("SELECT current_schema()").scalar()
        tables: dict[int, Table] = {}
        for oid, schema, name in conn.exec_driver_sql(self._TABLES).all():
            if name in IGNORED_TABLES:
                continue
            tables[oid] = Table(name=name, schema=None if schema == current else schema)
        oids = {"oids": list(tables)}
        enum_types: dict[int, list[tuple[Table, str]]] = {}
        for (
            relid,
            cname,
            ctype,
            notnull,
            default,
            identity,
            typtype,
            typoid,
        ) in conn.exec_driver_sql(self._COLUMNS, oids).all():
            tables[relid].columns[cname] = Column(
                name=cname, type=ctype, nullable=not notnull, default=default, identity=identity
            )
            if typtype == "e":
                enum_types.setdefault(typoid, []).append((tables[relid], cname))
        for typoid, users in enum_types.items():
            labels = tuple(
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT enumlabel FROM pg_enum WHERE enumtypid = %(t)s ORDER BY enumsortorder",
                    {"t": typoid},
                ).all()
            )
            for table, cname in users:
                table.enum_values[cname] = labels
        nnd = "ix.indnullsnotdistinct" if catalog.server_version >= (15,) else "false"
        for row in conn.exec_driver_sql(self._INDEXES.format(nnd=nnd), oids).all():
            (
                relid,
                iname,
                unique,
                primary,
                valid,
                ready,
                pred,
                nulls_nd,
                am,
                idef,
                conname,
                cols,
                building,
            ) = row
            table = tables[relid]
            table.indexes.append(
                Index(
                    name=iname,
                    table=self._key(table),
                    columns=tuple(cols),
                    unique=unique,
                    primary=primary,
                    predicate=pred,
                    valid=valid,
                    ready=ready,
                    nulls_not_distinct=nulls_nd,
                    constraint=conname,
                    method=am,
                    definition=idef,
                    building=building,
                )
            )
        for relid, conname, contype, cdef, validated in conn.exec_driver_sql(
            self._CONSTRAINTS, oids
        ).all():
            tables[relid].constraints.append(
                Constraint(
                    name=conname,
                    table=self._key(tables[relid]),
                    kind=self._KINDS.get(contype, contype),
                    definition=cdef,
                    validated=validated,
                )
            )
        for schema, sname, relid, col, last, start, inc, readable in conn.exec_driver_sql(
            self._SEQUENCES, oids
        ).all():
            qualified = sname if schema == current else f"{schema}.{sname}"
            if not readable:
                # pg_sequences shows NULL for a sequence we may not read: its position is
                # unknown, and guessing "never used" would report it behind.
                catalog.unreadable_sequences.append((qualified, self._key(tables[relid]), col))
                continue
            catalog.sequences.append(
                Sequence(
                    name=qualified,
                    table=self._key(tables[relid]),
                    column=col,
                    last_value=last,
                    start_value=start if start is not None else 1,
                    increment=inc if inc is not None else 1,
                )
            )
        for table in tables.values():
            catalog.tables[self._key(table)] = table
        return catalog

    @staticmethod
    def _key(table: Table) -> str:
        return f"{table.schema}.{table.name}" if table.schema else table.name


_DIALECTS: dict[str, type[DoctorDialect]] = {
    "sqlite": SQLiteDoctor,
    "postgresql": PostgreSQLDoctor,
}


def doctor_dialect(bind: Engine | Connection) -> DoctorDialect:
    return _DIALECTS[bind.dialect.name]()


def supported(name: str) -> bool:
    return name in _DIALECTS


__all__ = ["DoctorDialect", "doctor_dialect", "is_uuid_text", "supported"]
