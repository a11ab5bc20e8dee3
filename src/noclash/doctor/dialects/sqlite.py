"""SQLite: the catalog from ``sqlite_schema`` and pragmas, and table rebuilds.

SQLite's ALTER TABLE cannot drop a constraint. A UNIQUE written inside CREATE TABLE (the
most common way hand-written SQLite apps declare one) goes only with SQLite's documented
"12-step" rebuild (https://www.sqlite.org/lang_altertable.html#otheralter): new table,
copy, drop, rename, recreate indexes and triggers, ``PRAGMA foreign_key_check``, all in one
transaction with foreign keys off. :meth:`SQLiteDoctor.rebuild_without_unique` writes it.

Why not a library's rebuild: sqlite-utils' ``transform`` regenerates CREATE TABLE from its
own column model (CHECK constraints, collations and column constraints it does not model
are lost) and has no way to drop a table UNIQUE; Alembic's batch mode drops the table's
triggers and fails on a view that names the table (alembic#1207). Both only re-create the
table; the doctor must keep the original definition byte for byte except the one UNIQUE,
so it edits the stored CREATE TABLE text with a tokenizer instead.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from noclash.doctor.catalog import (
    IGNORED_TABLES,
    Catalog,
    Column,
    Constraint,
    Index,
    IndexKey,
    SchemaObject,
    Table,
    UnreadableTable,
)
from noclash.doctor.dialects.base import DoctorDialect, is_uuid_text, literal
from noclash.doctor.errors import CannotConnect, UnsupportedSchema
from noclash.doctor.names import identifier

LOCK = "SQLite: the database write lock (BEGIN IMMEDIATE) for the transaction; readers continue"

_TOKEN = re.compile(
    r"""(?P<ws>\s+)|(?P<comment>--[^\n]*|/\*.*?\*/)|(?P<string>'(?:[^']|'')*')
    |(?P<qid>"(?:[^"]|"")*"|\[[^\]]*\]|`(?:[^`]|``)*`)|(?P<word>(?:[^\W\d]|[^\x00-\x7f])(?:[\w$]|[^\x00-\x7f])*)
    |(?P<number>\d+(?:\.\d*)?)|(?P<op>.)""",
    re.S | re.X,
)
# A word is what SQLite's tokenizer takes for an identifier: a letter or ``_`` (any
# non-ASCII character counts as a letter), then letters, digits, ``_`` and ``$``.
_CONSTRAINT_WORDS = {"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"}


def _tokens(sql: str) -> list[tuple[str, str, int, int]]:
    """(kind, text, start, end) of every token but whitespace and comments."""
    return [
        (m.lastgroup or "", m.group(), m.start(), m.end())
        for m in _TOKEN.finditer(sql)
        if m.lastgroup not in ("ws", "comment")
    ]


def _unquote(text: str) -> str:
    if text[:1] in '"`' and text[-1:] == text[:1]:
        return text[1:-1].replace(text[0] * 2, text[0])
    if text[:1] == "[" and text[-1:] == "]":
        return text[1:-1]
    return text


def _parens(tokens: list[tuple[str, str, int, int]], open_at: int) -> int:
    """Index of the token closing the parenthesis opened at ``open_at``."""
    depth = 0
    for i in range(open_at, len(tokens)):
        if tokens[i][1] == "(":
            depth += 1
        elif tokens[i][1] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses")


def _elements(sql: str) -> tuple[int, int, list[tuple[int, int, list]]]:
    """The body of ``CREATE TABLE/INDEX ... (body)``: its span and its top-level elements,
    each as (start, end, tokens)."""
    toks = _tokens(sql)
    start = next(i for i, t in enumerate(toks) if t[1] == "(")
    end = _parens(toks, start)
    out: list[tuple[int, int, list]] = []
    current: list = []
    depth = 0
    for tok in toks[start + 1 : end]:
        if tok[1] == "(":
            depth += 1
        elif tok[1] == ")":
            depth -= 1
        if tok[1] == "," and depth == 0:
            out.append((current[0][2], current[-1][3], current))
            current = []
            continue
        current.append(tok)
    if current:
        out.append((current[0][2], current[-1][3], current))
    return toks[start][3], toks[end][2], out


def _key_name(tokens: list) -> str | None:
    """The column a key element names (``"col" COLLATE x DESC``), None for an expression."""
    if len(tokens) >= 1 and tokens[0][0] in ("word", "qid"):
        rest = [t[1].upper() for t in tokens[1:]]
        if not rest or rest[0] in ("COLLATE", "ASC", "DESC"):
            return _unquote(tokens[0][1])
    return None


def index_key_texts(create_index_sql: str) -> list[str]:
    """The key expressions of a CREATE INDEX, without COLLATE and ASC/DESC."""
    if not create_index_sql:
        return []
    on = re.search(r"\bON\b", create_index_sql, re.I)
    if on is None:
        return []
    _s, _e, elements = _elements(create_index_sql[on.end() :])
    out = []
    for _start, _end, toks in elements:
        words = [t[1].upper() for t in toks]
        cut = len(toks)
        for i, w in enumerate(words):
            if w in ("COLLATE", "ASC", "DESC") and i > 0:
                cut = i
                break
        text = " ".join(t[1] for t in toks[:cut])
        out.append(re.sub(r"\s*([(),])\s*", r"\1", text))
    return out


def remove_inline_unique(create_sql: str, columns: tuple[str, ...]) -> str:
    """``create_sql`` without the UNIQUE on exactly ``columns`` (table or column constraint).

    Raises ``ValueError`` when no such UNIQUE is written in it, or when it carries an
    ``ON CONFLICT`` clause other than the default ``ABORT``: ``REPLACE`` or ``IGNORE`` decide
    what the application's inserts do, and must never vanish with the constraint.
    """
    start, end = _inline_unique_span(create_sql, columns)
    conflict = _conflict_of(create_sql[start:end])
    if conflict not in (None, "ABORT"):
        raise ValueError(
            f"its UNIQUE ({', '.join(columns)}) says ON CONFLICT {conflict}, which decides what "
            f"conflicting inserts do; removing it would change the application's writes"
        )
    return create_sql[:start] + create_sql[end:]


def inline_unique_conflict(create_sql: str, columns: tuple[str, ...]) -> str | None:
    """The ``ON CONFLICT`` resolution (``REPLACE``, ``IGNORE``, ...) of the UNIQUE on exactly
    ``columns`` written in ``create_sql``; ``None`` without one (or without such a UNIQUE)."""
    try:
        start, end = _inline_unique_span(create_sql, columns)
    except (ValueError, StopIteration):
        return None
    return _conflict_of(create_sql[start:end])


def _conflict_of(text: str) -> str | None:
    m = re.search(r"\bON\s+CONFLICT\s+(\w+)", text, re.I)
    return m.group(1).upper() if m else None


def _inline_unique_span(create_sql: str, columns: tuple[str, ...]) -> tuple[int, int]:
    """The span of ``create_sql`` to cut to remove the UNIQUE on exactly ``columns``."""
    body_start, _body_end, elements = _elements(create_sql)
    wanted = tuple(c.lower() for c in columns)
    for n, (start, end, toks) in enumerate(elements):
        words = [t[1].upper() if t[0] == "word" else "" for t in toks]
        if words and words[0] in _CONSTRAINT_WORDS:
            at = 2 if words[0] == "CONSTRAINT" else 0
            if at < len(words) and words[at] == "UNIQUE":
                open_at = next(i for i, t in enumerate(toks) if t[1] == "(")
                close = _parens(toks, open_at)
                names: list[str | None] = []
                part: list = []
                for tok in [*toks[open_at + 1 : close], ("op", ",", 0, 0)]:
                    if tok[1] == ",":
                        names.append(_key_name(part))
                        part = []
                    else:
                        part.append(tok)
                if tuple((x or "").lower() for x in names) == wanted:
                    # Remove the element and the comma before it (or after, for the first).
                    if n > 0:
                        return elements[n - 1][1], end
                    nxt = elements[n + 1][0] if n + 1 < len(elements) else end
                    return start, nxt
            continue
        if len(wanted) == 1 and toks and _unquote(toks[0][1]).lower() == wanted[0]:
            for i, w in enumerate(words):
                if w != "UNIQUE":
                    continue
                first = i - 2 if i >= 2 and words[i - 2] == "CONSTRAINT" else i
                last = i
                if words[i + 1 : i + 3] == ["ON", "CONFLICT"]:
                    last = i + 3
                cut = len(create_sql[: toks[first][2]].rstrip())
                return cut, toks[last][3]
    del body_start
    raise ValueError(f"no UNIQUE ({', '.join(columns)}) written in CREATE TABLE")


_EVENTS = ("DELETE", "INSERT", "UPDATE")
_VIRTUAL = re.compile(r"\s*CREATE\s+VIRTUAL\s+TABLE\b", re.I)


def trigger_events(create_sql: str) -> tuple[str, ...]:
    """The row change that fires a ``CREATE TRIGGER`` (``UPDATE`` for ``AFTER UPDATE OF
    col ON t``); every one when the statement is not understood, so that a plan names a
    trigger too often rather than never."""
    words = [t[1].upper() if t[0] == "word" else t[1] for t in _tokens(create_sql)]
    if "TRIGGER" in words:
        i = words.index("TRIGGER") + 1
        if words[i : i + 3] == ["IF", "NOT", "EXISTS"]:
            i += 3
        i += 3 if words[i + 1 : i + 2] == ["."] else 1  # the (schema-qualified) name
        for word in words[i:]:
            if word in _EVENTS:
                return (word,)
            if word == "ON":
                break
    return _EVENTS


def _rowid_alias(table: Table) -> str | None:
    """The first of ``rowid``, ``_rowid_``, ``oid`` that no column of ``table`` has taken:
    the name that reaches its rowid (``None`` if all three are columns)."""
    taken = {c.lower() for c in table.columns}
    return next((a for a in ("rowid", "_rowid_", "oid") if a not in taken), None)


def _without_rowid(create_sql: str) -> bool:
    """Whether ``CREATE TABLE ... (...) <options>`` says ``WITHOUT ROWID`` after its body."""
    try:
        _start, body_end, _parts = _elements(create_sql)
    except (ValueError, StopIteration):
        return bool(re.search(r"\bWITHOUT\s+ROWID\b", create_sql, re.I))
    words = [t[1].upper() for t in _tokens(create_sql[body_end + 1 :])]
    return any(words[i : i + 2] == ["WITHOUT", "ROWID"] for i in range(len(words)))


def _rename_created(create_sql: str, new_name: str) -> str:
    """``CREATE TABLE old (...)`` as ``CREATE TABLE new (...)``; ``new_name`` is quoted
    already (the dialect's quoting doubles any quote inside it)."""
    toks = _tokens(create_sql)
    i = next(n for n, t in enumerate(toks) if t[1].upper() == "TABLE") + 1
    if [t[1].upper() for t in toks[i : i + 3]] == ["IF", "NOT", "EXISTS"]:
        i += 3
    # A schema-qualified name: main."t"
    end = i + 2 if i + 1 < len(toks) and toks[i + 1][1] == "." else i
    return create_sql[: toks[i][2]] + new_name + create_sql[toks[end][3] :]


class SQLiteDoctor(DoctorDialect):
    name: ClassVar[str] = "sqlite"
    # SQLite's rowid names a row for the whole transaction (tables WITHOUT ROWID have a
    # primary key, which is used first).
    evidence_row_id: ClassVar[str] = "rowid"
    stable_row_id: ClassVar[str | None] = "rowid"
    case_insensitive_names: ClassVar[bool] = True

    def check_url(self, url: URL) -> None:
        database = url.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file:")
        if not in_memory and not Path(database).is_file():
            # pysqlite would silently create an empty file: refuse instead.
            raise CannotConnect(f"no SQLite database at {database}")

    def configure_engine(self, engine: Engine) -> None:
        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: object) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            # A table rebuild drops the old table: with foreign keys on, that would delete
            # or refuse rows of referencing tables. Off is SQLite's default; say so, and
            # check integrity with foreign_key_check after every repair instead.
            dbapi_conn.execute("PRAGMA foreign_keys=OFF")

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Repairs take the write lock up front; the read-only doctor does not.
            readonly = conn.get_execution_options().get("noclash_readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

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

    def new_uuid4_sql(self, *, uuid_type: bool, hyphens: bool) -> str:
        # 122 random bits from SQLite's CSPRNG with the version (4) and variant (8-b) set.
        h = "lower(hex(randomblob({})))"
        parts = [
            h.format(4),
            h.format(2),
            f"'4' || substr({h.format(2)}, 2)",
            f"substr('89ab', 1 + (abs(random()) % 4), 1) || substr({h.format(2)}, 2)",
            h.format(6),
        ]
        sep = " || '-' || " if hyphens else " || "
        return "(" + sep.join(parts) + ")"

    def locks(self, *kinds: str) -> str:
        return LOCK

    def taken_names(self, conn: Connection, table: Table) -> set[str]:
        # Tables, indexes and views share one namespace per database (triggers too, here:
        # a name nobody else has is the point).
        rows = conn.exec_driver_sql("SELECT name FROM sqlite_master").all()
        return {self.fold_name(r[0]) for r in rows if r[0]}

    def verify_integrity(self, conn: Connection) -> list[str]:
        try:
            rows = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
        except sa.exc.OperationalError as exc:
            # "foreign key mismatch": a REFERENCES whose parent key no PRIMARY KEY or UNIQUE
            # index covers. SQLite then cannot check any foreign key, so no repair could
            # prove it keeps them: refuse before changing anything.
            said = str(exc.orig or exc).strip().splitlines()[0]
            bad = "; ".join(self.foreign_key_mismatches(conn)) or said
            raise UnsupportedSchema(
                f"SQLite cannot check this database's foreign keys ({said}): {bad}. Make the "
                f"parent key a PRIMARY KEY or UNIQUE, or correct the REFERENCES clause, then "
                f"run the repair again; nothing was changed"
            ) from None
        return [f"{r[0]} row {r[1]} references a missing row of {r[2]}" for r in rows]

    def foreign_key_mismatches(self, conn: Connection) -> list[str]:
        """Foreign keys whose parent columns no PRIMARY KEY or UNIQUE index covers exactly
        (what SQLite calls a "foreign key mismatch"), described for a person."""
        names = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            ).all()
        ]
        by_lower = {n.lower(): n for n in names}
        out = []
        for child in names:
            fks: dict[int, tuple[str, list[tuple[int, str, str | None]]]] = {}
            for fid, seq, parent, frm, to, *_rest in conn.exec_driver_sql(
                f"PRAGMA foreign_key_list({self.quote(conn, child)})"
            ).all():
                fks.setdefault(fid, (parent, []))[1].append((seq, frm, to))
            for parent, parts in fks.values():
                parts.sort()
                frm_cols = [p[1] for p in parts]
                to_cols = [p[2] for p in parts]
                real = by_lower.get(parent.lower())
                if real is None:
                    continue  # a missing parent table: foreign_key_check reports its rows
                if self._parent_key_ok(conn, real, to_cols):
                    continue
                shown = ", ".join(c for c in to_cols if c) or "its primary key"
                out.append(
                    f"{child}({', '.join(frm_cols)}) REFERENCES {parent}({shown}), which no "
                    f"PRIMARY KEY or UNIQUE index of {parent} covers"
                )
        return out

    def _parent_key_ok(self, conn: Connection, parent: str, to_cols: list[str | None]) -> bool:
        qp = self.quote(conn, parent)
        info = conn.exec_driver_sql(f"PRAGMA table_info({qp})").all()
        pk = {r[1].lower() for r in info if r[5]}
        if all(c is None for c in to_cols):
            return bool(pk)
        wanted = {(c or "").lower() for c in to_cols}
        if wanted == pk:
            return True
        for _seq, iname, unique, _origin, partial in conn.exec_driver_sql(
            f"PRAGMA index_list({qp})"
        ).all():
            if not unique or partial:
                continue
            cols = conn.exec_driver_sql(f"PRAGMA index_info({self.quote(conn, iname)})").all()
            if {(r[2] or "").lower() for r in cols} == wanted:
                return True
        return False

    def unique_conflict(self, table: Table, index: Index) -> str | None:
        if not index.inline:
            return None
        return inline_unique_conflict(table.create_sql, index.column_names)

    def drop_unique_sql(self, conn: Connection, table: Table, index: Index) -> list[str]:
        if index.inline:
            return self.rebuild_without_unique(conn, table, index)
        return [f"DROP INDEX IF EXISTS {self.index_sql(conn, table, index.name)}"]

    def rebuild_without_unique(self, conn: Connection, table: Table, index: Index) -> list[str]:
        """SQLite's 12-step rebuild of ``table`` without the inline UNIQUE behind ``index``.

        Steps 1 and 12 (foreign keys off and on) are the connection's (the doctor's
        connections keep them off); 2 and 11 (BEGIN/COMMIT) are the repair's transaction.
        With ``legacy_alter_table`` on, the rename leaves views and other tables' foreign
        keys and triggers naming the table as they are: they resolve to the new table.
        """
        q = self.quote(conn, table.name)
        tmp = identifier("noclash_new", table.name)
        qt = self.quote(conn, tmp)
        # Generated columns compute themselves in the new table (and cannot be written).
        copied = [c.name for c in table.columns.values() if not c.generated]
        cols = ", ".join(self.quote(conn, c) for c in copied)
        try:
            new_sql = _rename_created(
                remove_inline_unique(table.create_sql, index.column_names), qt
            )
        except (ValueError, StopIteration) as exc:
            raise UnsupportedSchema(
                f"cannot rebuild {table.name} without its UNIQUE "
                f"({', '.join(index.column_names)}): its CREATE TABLE is not understood "
                f"({exc or 'no table name'}); nothing was changed"
            ) from None
        rowid = self._rowid_to_keep(table)
        if rowid is not None:
            # A rowid table without INTEGER PRIMARY KEY: copying the columns alone numbered
            # the rows afresh, and whatever holds a rowid (an FTS external-content index,
            # the application's own references, the backup's row ids) then named other rows.
            out = [new_sql, f"INSERT INTO {qt} ({rowid}, {cols}) SELECT {rowid}, {cols} FROM {q}"]
        else:
            out = [new_sql, f"INSERT INTO {qt} ({cols}) SELECT {cols} FROM {q}"]
        if re.search(r"\bAUTOINCREMENT\b", table.create_sql, re.I):
            # Keep AUTOINCREMENT's high-water mark: ids of deleted rows are never reused.
            lit, new_lit = literal(table.name), literal(tmp)
            out += [
                f"DELETE FROM sqlite_sequence WHERE name = {new_lit}",
                f"INSERT INTO sqlite_sequence (name, seq) SELECT {new_lit}, seq "
                f"FROM sqlite_sequence WHERE name = {lit}",
            ]
        out += [
            f"DROP TABLE {q}",
            "PRAGMA legacy_alter_table = ON",
            f"ALTER TABLE {qt} RENAME TO {q}",
            "PRAGMA legacy_alter_table = OFF",
        ]
        out += [ix.definition for ix in table.indexes if ix.definition and not ix.inline]
        out += [t.sql for t in table.triggers]
        return out

    def backup_row_id(self, table: Table) -> str | None:
        # A table without a primary key is a rowid table (WITHOUT ROWID needs one).
        return None if table.primary_key else _rowid_alias(table)

    @staticmethod
    def _rowid_to_keep(table: Table) -> str | None:
        """The name to copy the rowid by in a rebuild of ``table``: ``None`` when the rowid is
        a column already (INTEGER PRIMARY KEY) or there is none (WITHOUT ROWID).

        ``rowid``, ``_rowid_`` and ``oid`` all name it unless a column has taken the name
        (Signal Desktop's ``messages`` has a column ``rowid``); if all three are taken the
        rowid cannot be named, and the rebuild is refused rather than renumber the rows.
        """
        if any(ix.rowid for ix in table.indexes) or _without_rowid(table.create_sql):
            return None
        alias = _rowid_alias(table)
        if alias is not None:
            return alias
        raise UnsupportedSchema(
            f"cannot rebuild {table.name}: its columns rowid, _rowid_ and oid hide the rowid, "
            f"which the copy must keep; nothing was changed"
        )

    def read_catalog(self, conn: Connection) -> Catalog:
        catalog = Catalog(dialect=self.name, server_version=sqlite3.sqlite_version_info)
        schema = conn.exec_driver_sql(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
        ).all()
        index_sql = {name: sql for kind, name, _t, sql in schema if kind == "index"}
        catalog.views = [
            SchemaObject("view", name, tbl, sql)
            for kind, name, tbl, sql in schema
            if kind == "view"
        ]
        triggers = [
            SchemaObject("trigger", name, tbl, sql, trigger_events(sql or ""))
            for kind, name, tbl, sql in schema
            if kind == "trigger"
        ]
        for kind, name, _tbl, create_sql in schema:
            if kind != "table" or name.startswith("sqlite_") or name in IGNORED_TABLES:
                continue
            table = Table(
                name=name,
                schema=None,
                create_sql=create_sql or "",
                virtual=bool(_VIRTUAL.match(create_sql or "")),
            )
            # ``tbl_name`` of a trigger is spelled as its CREATE TRIGGER wrote the table
            # (``ON conversations`` for ``Conversations``), and SQLite matches it without
            # regard to case: an exact match missed such triggers, so the plan did not name
            # them and a table rebuild (which drops every trigger of the table) lost them.
            table.triggers = [t for t in triggers if t.table.lower() == name.lower()]
            qn = self.quote(conn, name)
            try:
                # table_xinfo, not table_info: the latter leaves out generated columns, so a
                # UNIQUE ``email_key AS (lower(email))`` was invisible to every check and a
                # ``--key`` naming it was refused as a column that does not exist.
                xinfo = conn.exec_driver_sql(f"PRAGMA table_xinfo({qn})").all()
            except sa.exc.OperationalError as exc:
                if not table.virtual:
                    raise
                # A virtual table whose module (or FTS tokenizer) this SQLite build lacks:
                # it cannot be described, let alone read. Skipped with a note, like a table
                # the role may not read on PostgreSQL; it ended the whole run (exit 2).
                said = str(exc.orig or exc).strip().splitlines()[0]
                catalog.unreadable_tables.append(
                    UnreadableTable(
                        name=name,
                        missing=(),
                        grants=(),
                        reason=(
                            f"it is a virtual table this SQLite build cannot open ({said}); "
                            f"run the doctor where its module is loaded to inspect it"
                        ),
                    )
                )
                continue
            # hidden: 0 a column, 1 a virtual table's hidden column (FTS5's rank), 2 and 3
            # a generated (VIRTUAL, STORED) column.
            info = [r for r in xinfo if r[6] != 1]
            for _cid, cname, ctype, notnull, dflt, pk, hidden in info:
                table.columns[cname] = Column(
                    name=cname,
                    type=ctype or "",
                    nullable=not notnull and not pk,
                    default=dflt,
                    primary_key=bool(pk),
                    generated=hidden in (2, 3),
                )
            pk_cols = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
            for _seq, iname, unique, origin, partial in conn.exec_driver_sql(
                f"PRAGMA index_list({qn})"
            ).all():
                table.indexes.append(
                    self._index(conn, name, iname, unique, origin, partial, index_sql.get(iname))
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
                        definition="",
                        rowid=True,
                    )
                )
            if create_sql and re.search(r"\bCHECK\b", create_sql, re.I):
                table.constraints.append(Constraint("check", name, "check", create_sql))
            catalog.tables[name] = table
        self._referenced(conn, catalog)
        return catalog

    def _referenced(self, conn: Connection, catalog: Catalog) -> None:
        """Fill :attr:`Table.referenced` from every table's foreign keys.

        Without it, a guard that reads it (a token column a foreign key references is not
        migrated by ``repair``) held only on PostgreSQL. ``REFERENCES parent`` with no
        column list references the parent's primary key; the parent's name is matched
        without regard to case, as SQLite does.
        """
        by_lower = {n.lower(): t for n, t in catalog.tables.items()}
        for child in catalog.tables:
            for row in conn.exec_driver_sql(
                f"PRAGMA foreign_key_list({self.quote(conn, child)})"
            ).all():
                parent_name, to = row[2], row[4]
                parent = by_lower.get(parent_name.lower())
                if parent is None:
                    continue
                if to is None:
                    parent.referenced.update(parent.primary_key)
                else:
                    column = next((c for c in parent.columns if c.lower() == to.lower()), to)
                    parent.referenced.add(column)

    def _index(
        self,
        conn: Connection,
        table: str,
        iname: str,
        unique: int,
        origin: str,
        partial: int,
        sql_text: str | None,
    ) -> Index:
        xinfo = [r for r in conn.exec_driver_sql(f"PRAGMA index_xinfo({self.quote(conn, iname)})")]
        key_rows = [r for r in xinfo if r[5]]
        texts = index_key_texts(sql_text or "")
        keys = []
        for n, (_seqno, cid, cname, desc, coll, _key) in enumerate(key_rows):
            expr = cname if cid >= 0 else (texts[n] if n < len(texts) else "?")
            keys.append(
                IndexKey(
                    expression=expr if cid >= 0 else expr.lower(),
                    column=cname if cid >= 0 else None,
                    collation=None if (coll or "BINARY").upper() == "BINARY" else coll.upper(),
                    descending=bool(desc),
                )
            )
        predicate = None
        if partial:
            m = re.search(r"\bWHERE\b(.*)$", sql_text or "", re.I | re.S)
            predicate = m.group(1).strip() if m else "?"
        return Index(
            name=iname,
            table=table,
            columns=tuple(r[2] if r[1] >= 0 else None for r in key_rows),
            unique=bool(unique),
            primary=origin == "pk",
            predicate=predicate,
            constraint=iname if origin in ("u", "pk") else None,
            definition=sql_text or "",
            keys=tuple(keys),
            inline=origin in ("u", "pk"),
        )
