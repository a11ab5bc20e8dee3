"""PostgreSQL: the catalog from ``pg_catalog``, concurrent index builds, sequences."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy.engine import Connection

from noclash.doctor.catalog import (
    IGNORED_TABLES,
    Catalog,
    Column,
    Constraint,
    Index,
    IndexKey,
    SchemaObject,
    Sequence,
    Table,
    UnreadableTable,
)
from noclash.doctor.connect import run_sql
from noclash.doctor.dialects.base import UUID_RE, DoctorDialect


class PostgreSQLDoctor(DoctorDialect):
    name: ClassVar[str] = "postgresql"
    supports_concurrent_index: ClassVar[bool] = True
    supports_constraint_using_index: ClassVar[bool] = True
    supports_alter_default: ClassVar[bool] = True
    has_sequences: ClassVar[bool] = True
    can_drop_table_constraint: ClassVar[bool] = True
    # Since PostgreSQL 15; read_catalog reads it as false on older servers.
    supports_nulls_not_distinct: ClassVar[bool] = True
    supports_amcheck: ClassVar[bool] = True
    enforces_length: ClassVar[bool] = True
    # ctid names a row version: fine to point at evidence, useless to a repair.
    evidence_row_id: ClassVar[str] = "ctid::text"
    stable_row_id: ClassVar[str | None] = None

    # has_table_privilege alone is not enough: without USAGE on its schema a table with
    # SELECT still cannot be read ("permission denied for schema").
    _TABLES: ClassVar[str] = """
        SELECT c.oid, n.nspname, c.relname, c.relkind = 'p',
               has_schema_privilege(n.oid, 'USAGE'), has_table_privilege(c.oid, 'SELECT')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
        ORDER BY n.nspname, c.relname"""
    _COLUMNS: ClassVar[str] = """
        SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity <> '', t.typtype, a.atttypid,
               a.attgenerated <> ''
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attrelid, a.attnum"""
    # Key parts: column or expression text, non-default operator class, non-default
    # collation, DESC (indoption bit 1) and NULLS FIRST (bit 2). indkey has every column;
    # indclass, indcollation and indoption only the key ones (INCLUDE columns follow).
    _INDEXES: ClassVar[str] = """
        SELECT ix.indrelid, i.relname, ix.indisunique, ix.indisprimary, ix.indisvalid,
               ix.indisready, pg_get_expr(ix.indpred, ix.indrelid), {nnd}, am.amname,
               pg_get_indexdef(ix.indexrelid), con.conname,
               (SELECT json_agg(json_build_array(
                          pg_get_indexdef(ix.indexrelid, k, true), a.attname,
                          CASE WHEN oc.opcdefault THEN NULL ELSE oc.opcname END,
                          CASE WHEN ix.indcollation[k - 1] IN (0, 100)
                                 OR ix.indcollation[k - 1] = a.attcollation
                               THEN NULL ELSE co.collname END,
                          (ix.indoption[k - 1] & 1) <> 0, (ix.indoption[k - 1] & 2) <> 0)
                        ORDER BY k)
                FROM generate_series(1, ix.indnkeyatts) AS k
                LEFT JOIN pg_attribute a
                  ON a.attrelid = ix.indrelid AND a.attnum = ix.indkey[k - 1]
                 AND ix.indkey[k - 1] <> 0
                LEFT JOIN pg_opclass oc ON oc.oid = ix.indclass[k - 1]
                LEFT JOIN pg_collation co ON co.oid = ix.indcollation[k - 1]),
               ARRAY(SELECT a.attname FROM generate_series(ix.indnkeyatts + 1, ix.indnatts) k
                     JOIN pg_attribute a
                       ON a.attrelid = ix.indrelid AND a.attnum = ix.indkey[k - 1]
                     ORDER BY k),
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
    # User triggers that fire in a normal session (tgenabled 'O'rigin or 'A'lways; not
    # disabled or replica-only ones), with the events in tgtype's bits.
    _TRIGGERS: ClassVar[str] = """
        SELECT tgrelid, tgname, pg_get_triggerdef(oid), (tgtype & 4) <> 0, (tgtype & 16) <> 0,
               (tgtype & 8) <> 0, (tgtype & 32) <> 0
        FROM pg_trigger
        WHERE tgrelid = ANY(%(oids)s) AND NOT tgisinternal AND tgenabled IN ('O', 'A')
        ORDER BY tgrelid, tgname"""
    # Columns of the inspected tables that a foreign key references.
    _REFERENCED: ClassVar[str] = """
        SELECT DISTINCT c.confrelid, a.attname
        FROM pg_constraint c CROSS JOIN LATERAL unnest(c.confkey) AS k(attnum)
        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum
        WHERE c.contype = 'f' AND c.confrelid = ANY(%(oids)s)"""
    # Every sequence a column draws from, as (sequence, table, column number, owned): one
    # the column owns (serial: deptype 'a', identity: 'i'; the sequence depends on the
    # column) or one its default names (pg_dump's DEFAULT nextval('t_id_seq'::regclass)
    # records a normal dependency of the pg_attrdef row on the sequence). What is read of
    # a sequence is then written once, not once per way of finding it.
    _SEQUENCES: ClassVar[str] = """
        WITH uses (seq, rel, att, owned) AS (
            SELECT d.refobjid, ad.adrelid, ad.adnum, d.deptype IN ('a', 'i')
            FROM pg_depend d
            JOIN pg_attrdef ad ON ad.oid = d.objid
            WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
            UNION
            SELECT d.objid, d.refobjid, d.refobjsubid, true
            FROM pg_depend d
            WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
              AND d.deptype IN ('a', 'i')
        )
        SELECT s.oid, sn.nspname, s.relname, u.rel, a.attname, u.owned,
               sq.seqstart, sq.seqincrement, has_sequence_privilege(s.oid, 'SELECT')
        FROM uses u
        JOIN pg_class s ON s.oid = u.seq AND s.relkind = 'S'
        JOIN pg_namespace sn ON sn.oid = s.relnamespace
        JOIN pg_sequence sq ON sq.seqrelid = s.oid
        JOIN pg_attribute a ON a.attrelid = u.rel AND a.attnum = u.att
        WHERE u.rel = ANY(%(oids)s)
        ORDER BY 2, 3, 4, 5"""
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

    def new_uuid4_sql(self, *, uuid_type: bool, hyphens: bool) -> str:
        if uuid_type:
            return "gen_random_uuid()"
        if hyphens:
            return "gen_random_uuid()::text"
        return "replace(gen_random_uuid()::text, '-', '')"

    def uuid_default_sql(self, conn: Connection, table: Table, column: str) -> list[str]:
        col = table.columns[column]
        value = "gen_random_uuid()" if col.is_uuid else "gen_random_uuid()::text"
        return [
            f"ALTER TABLE {self.table_sql(conn, table)} "
            f"ALTER COLUMN {self.quote(conn, column)} SET DEFAULT {value}"
        ]

    def taken_names(self, conn: Connection, table: Table) -> set[str]:
        # Indexes share pg_class's namespace with tables, sequences and views of their
        # schema; ADD CONSTRAINT ... USING INDEX also needs a constraint name the table has
        # not used.
        rows = conn.exec_driver_sql(
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = coalesce(%(schema)s, current_schema())
            UNION
            SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%(table)s)
            """,
            {"schema": table.schema, "table": self.table_sql(conn, table)},
        ).all()
        return {r[0] for r in rows}

    def read_catalog(self, conn: Connection) -> Catalog:
        raw: Any = conn.connection.driver_connection
        version = raw.info.server_version  # e.g. 180001
        catalog = Catalog(dialect=self.name, server_version=(version // 10000, version % 10000))
        current, catalog.role = conn.exec_driver_sql("SELECT current_schema(), current_user").one()
        tables: dict[int, Table] = {}
        for oid, schema, name, partitioned, usage, select in conn.exec_driver_sql(
            self._TABLES
        ).all():
            if name in IGNORED_TABLES:
                continue
            table = Table(
                name=name, schema=None if schema == current else schema, partitioned=partitioned
            )
            if not (usage and select):
                # Skipped, not fatal: one table the role may not read ended the whole run
                # with "cannot read" (exit 2), hiding what the other tables hold.
                catalog.unreadable_tables.append(
                    UnreadableTable(
                        name=_key(table),
                        missing=(
                            *(() if usage else (f"USAGE on schema {schema}",)),
                            *(() if select else ("SELECT",)),
                        ),
                        grants=self._grant_read_sql(
                            conn, table, schema, catalog.role, usage, select
                        ),
                    )
                )
                continue
            tables[oid] = table
        oids = {"oids": list(tables)}
        self._columns(conn, tables, oids)
        nnd = "ix.indnullsnotdistinct" if catalog.server_version >= (15,) else "false"
        for row in conn.exec_driver_sql(self._INDEXES.format(nnd=nnd), oids).all():
            (relid, iname, unique, primary, valid, ready, pred, nulls_nd, am, idef, conname) = row[
                :11
            ]
            keys_json, include, building = row[11:]
            keys = tuple(
                IndexKey(
                    expression=expr if col is None else col,
                    column=col,
                    opclass=opc,
                    collation=coll,
                    descending=desc,
                    nulls_first=nulls_first,
                )
                for expr, col, opc, coll, desc, nulls_first in keys_json or []
            )
            table = tables[relid]
            table.indexes.append(
                Index(
                    name=iname,
                    table=_key(table),
                    columns=tuple(k.column for k in keys),
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
                    keys=keys,
                    include=tuple(include),
                )
            )
        for relid, conname, contype, cdef, validated in conn.exec_driver_sql(
            self._CONSTRAINTS, oids
        ).all():
            tables[relid].constraints.append(
                Constraint(
                    name=conname,
                    table=_key(tables[relid]),
                    kind=self._KINDS.get(contype, contype),
                    definition=cdef,
                    validated=validated,
                )
            )
        for relid, tname, tdef, *fired_by in conn.exec_driver_sql(self._TRIGGERS, oids).all():
            events = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
            tables[relid].triggers.append(
                SchemaObject(
                    "trigger",
                    tname,
                    _key(tables[relid]),
                    tdef,
                    tuple(e for e, on in zip(events, fired_by, strict=True) if on),
                )
            )
        for relid, column in conn.exec_driver_sql(self._REFERENCED, oids).all():
            tables[relid].referenced.add(column)
        self._sequences(conn, catalog, tables, oids, current)
        for table in tables.values():
            catalog.tables[_key(table)] = table
        return catalog

    def _grant_read_sql(
        self,
        conn: Connection,
        table: Table,
        schema: str,
        role: str | None,
        usage: bool,
        select: bool,
    ) -> tuple[str, ...]:
        """What lets ``role`` read ``table``: USAGE on its schema and SELECT on the table,
        whichever it lacks."""
        grantee = self.quote(conn, role) if role else "CURRENT_USER"
        out = [] if usage else [f"GRANT USAGE ON SCHEMA {self.quote(conn, schema)} TO {grantee}"]
        if not select:
            out.append(f"GRANT SELECT ON TABLE {self.table_sql(conn, table)} TO {grantee}")
        return tuple(out)

    def _columns(self, conn: Connection, tables: dict[int, Table], oids: dict) -> None:
        enum_types: dict[int, list[tuple[Table, str]]] = {}
        sql = self._COLUMNS
        if conn.connection.driver_connection.info.server_version < 120000:
            sql = sql.replace("a.attgenerated <> ''", "false")  # generated columns: 12+
        for (
            relid,
            cname,
            ctype,
            notnull,
            default,
            identity,
            typtype,
            typoid,
            generated,
        ) in conn.exec_driver_sql(sql, oids).all():
            tables[relid].columns[cname] = Column(
                name=cname,
                type=ctype,
                nullable=not notnull,
                default=default,
                identity=identity,
                generated=generated,
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

    def _sequences(
        self,
        conn: Connection,
        catalog: Catalog,
        tables: dict[int, Table],
        oids: dict,
        current: str,
    ) -> None:
        found: dict[int, dict[str, Any]] = {}
        for soid, schema, sname, relid, col, owned, start, inc, readable in conn.exec_driver_sql(
            self._SEQUENCES, oids
        ).all():
            qualified = (
                self.quote(conn, sname)
                if schema == current
                else f"{self.quote(conn, schema)}.{self.quote(conn, sname)}"
            )
            entry = found.setdefault(
                soid,
                {
                    "name": qualified,
                    "users": [],
                    "owned": False,
                    "start": start,
                    "inc": inc,
                    "readable": readable,
                },
            )
            user = (_key(tables[relid]), col)
            if user not in entry["users"]:
                entry["users"].append(user)
            entry["owned"] = entry["owned"] or owned
        for entry in found.values():
            if not entry["readable"]:
                # The sequence's position is unknown, and guessing "never used" would
                # report it behind.
                for table, col in entry["users"]:
                    catalog.unreadable_sequences.append((entry["name"], table, col))
                continue
            last, called = run_sql(conn, f"SELECT last_value, is_called FROM {entry['name']}").one()
            catalog.sequences.append(
                Sequence(
                    name=entry["name"],
                    users=tuple(entry["users"]),
                    last_value=last if called else None,
                    start_value=last if not called else entry["start"],
                    increment=entry["inc"],
                    owned=entry["owned"],
                )
            )


def _key(table: Table) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name
