"""What the doctor knows about a database's schema, read once per run.

The catalog is plain data read from the system catalog (``pg_catalog``) or from SQLite's
``sqlite_schema`` and pragmas, not from SQLAlchemy's reflection: the doctor needs facts that
reflection does not expose (``indisvalid``, ``indisready``, ``NULLS NOT DISTINCT``, partial
index predicates on SQLite, operator classes and INCLUDE columns, which index backs which
constraint, which sequences a column default draws from).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Tables the doctor and repair create; never inspected.
BACKUP_TABLE = "noclash_repair_backup"
IGNORED_TABLES = frozenset({BACKUP_TABLE})

_TEXT_TYPES = re.compile(r"char|text|clob|string|citext", re.I)
_INT_TYPES = re.compile(r"int|serial", re.I)
# A length-limited text type: ``character varying(8)``, ``character(6)``, ``VARCHAR(8)``.
_TEXT_LENGTH = re.compile(r"char[^(]*\(\s*(\d+)\s*\)", re.I)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    default: str | None = None
    primary_key: bool = False
    identity: bool = False
    # ``GENERATED ALWAYS AS (...)``: its value is computed, so no repair may write it and a
    # table rebuild must not copy it. (SQLite's ``PRAGMA table_info`` leaves such columns
    # out: a unique ``email_key AS (lower(email))`` was invisible to every check.)
    generated: bool = False

    @property
    def is_text(self) -> bool:
        return bool(_TEXT_TYPES.search(self.type))

    @property
    def is_uuid(self) -> bool:
        return self.type.lower() == "uuid"

    @property
    def is_integer(self) -> bool:
        return bool(_INT_TYPES.search(self.type))

    @property
    def max_length(self) -> int | None:
        """The declared length limit of a ``char``/``varchar`` column, if any (enforced only
        where the dialect says :attr:`~noclash.doctor.dialects.DoctorDialect.enforces_length`)."""
        m = _TEXT_LENGTH.search(self.type)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class IndexKey:
    """One key part of an index, with everything that decides which queries it serves.

    ``column`` is ``None`` for an expression (``lower(email)``), whose text is ``expression``.
    ``opclass`` and ``collation`` are ``None`` when they are the default for the column's
    type: Django's ``varchar_pattern_ops`` index serves ``LIKE 'abc%'``, which the default
    operator class on the same column does not, so the two are different keys.
    """

    expression: str
    column: str | None = None
    opclass: str | None = None
    collation: str | None = None
    descending: bool = False
    nulls_first: bool = False


@dataclass(frozen=True)
class Index:
    """An index; ``columns`` holds ``None`` for an expression key part."""

    name: str
    table: str
    columns: tuple[str | None, ...]
    unique: bool
    primary: bool = False
    predicate: str | None = None
    valid: bool = True
    ready: bool = True
    nulls_not_distinct: bool = False
    # Name of the UNIQUE/PRIMARY KEY constraint this index implements, if any.
    constraint: str | None = None
    method: str = "btree"
    definition: str = ""
    # A CREATE INDEX [CONCURRENTLY] is running on it right now (pg_stat_progress_create_index).
    building: bool = False
    # Key parts in order; empty when the dialect cannot say more than ``columns``.
    keys: tuple[IndexKey, ...] = ()
    # INCLUDE (...) columns: stored in the index, not part of its key.
    include: tuple[str, ...] = ()
    # SQLite: the UNIQUE is written inside CREATE TABLE (an sqlite_autoindex_*): it cannot be
    # dropped without rebuilding the table.
    inline: bool = False
    # SQLite's INTEGER PRIMARY KEY is the rowid itself, not an index.
    rowid: bool = False

    @property
    def has_expressions(self) -> bool:
        return any(c is None for c in self.columns)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c is not None)

    @property
    def key_parts(self) -> tuple[IndexKey, ...]:
        if self.keys:
            return self.keys
        return tuple(IndexKey(expression=c or "?", column=c) for c in self.columns)


@dataclass(frozen=True)
class Sequence:
    """A PostgreSQL sequence some column draws from: owned (serial, identity) or used by a
    column default (pg_dump's ``DEFAULT nextval('t_id_seq'::regclass)``).

    ``users`` are the (table, column) pairs whose values come from it: the next value must
    be above the largest of all of them.
    """

    name: str
    users: tuple[tuple[str, str], ...]
    # ``None`` until the first ``nextval`` (or after ``setval(..., false)``).
    last_value: int | None
    start_value: int = 1
    increment: int = 1
    owned: bool = True

    @property
    def table(self) -> str:
        return self.users[0][0]

    @property
    def column(self) -> str:
        return self.users[0][1]

    @property
    def next_value(self) -> int:
        """The value the next ``nextval`` returns."""
        if self.last_value is None:
            return self.start_value
        return self.last_value + self.increment


@dataclass(frozen=True)
class Constraint:
    name: str
    table: str
    kind: str  # "check", "unique", "foreign key", ...
    definition: str
    validated: bool = True


@dataclass(frozen=True)
class SchemaObject:
    """A trigger or view: its definition (SQLite's, for a table rebuild, which must recreate
    them) and, for a trigger, the row changes that fire it (a plan names the triggers its
    UPDATEs fire)."""

    kind: str
    name: str
    table: str
    sql: str
    # "INSERT", "UPDATE", "DELETE", "TRUNCATE": what fires the trigger.
    events: tuple[str, ...] = ()


@dataclass
class Table:
    name: str
    schema: str | None
    columns: dict[str, Column] = field(default_factory=dict)
    indexes: list[Index] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    # Enum labels per column (PostgreSQL enum types).
    enum_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # SQLite: the CREATE TABLE statement as stored.
    create_sql: str = ""
    # User triggers on the table (enabled ones on PostgreSQL; not those behind foreign keys).
    triggers: list[SchemaObject] = field(default_factory=list)
    # PostgreSQL: a partitioned table (PARTITION BY). An index on it cannot be built
    # CONCURRENTLY, and a unique one must include the partition key.
    partitioned: bool = False
    # SQLite: a virtual table (FTS5, R*Tree, ...). It has no index, unique or not, and a
    # repair could never build one on it.
    virtual: bool = False
    # Columns a foreign key of some table references (``REFERENCES t(col)``): changing
    # their values fails, or cascades into the referencing rows.
    referenced: set[str] = field(default_factory=set)

    @property
    def primary_key(self) -> tuple[str, ...]:
        for ix in self.indexes:
            if ix.primary:
                return ix.column_names
        return tuple(c.name for c in self.columns.values() if c.primary_key)

    def unique_indexes(self) -> list[Index]:
        return [ix for ix in self.indexes if ix.unique]

    def has_unique_on(self, columns: tuple[str, ...], *, whole_table: bool = True) -> bool:
        """Whether a valid unique index enforces uniqueness of exactly ``columns`` or a subset.

        Uniqueness on a subset implies uniqueness of the superset. A partial index does not
        count when ``whole_table`` is true.
        """
        wanted = set(columns)
        for ix in self.unique_indexes():
            if not ix.valid:
                continue
            if whole_table and ix.predicate:
                continue
            read = self.key_columns(ix)
            if read is not None and read <= wanted:
                return True
        return False

    def key_columns(self, index: Index) -> set[str] | None:
        """The columns the key of ``index`` is computed from, when that key's uniqueness
        implies theirs; ``None`` when it may not.

        A column key part reads its column. An expression reads the columns it names, and
        counts only when built from functions that return NULL for NULL alone
        (:data:`_NULL_ONLY_ON_NULL`): ``UNIQUE (lower(email))`` refuses two equal e-mails,
        so it enforces the key ``email`` (the usual case-insensitive unique e-mail). It was
        taken for no index at all, and a stated ``--key users.email`` got a warning that
        nothing enforces it and a repair adding a second unique index. ``nullif(email, '')``
        could map many rows to NULL, which never collides: such an index does not count.
        """
        read = set(index.column_names)
        for part in index.key_parts:
            if part.column is not None:
                continue
            named = expression_columns(part.expression, self.columns)
            if named is None:
                return None
            read |= named
        return read

    def covered_by_unique(self, column: str) -> bool:
        """Whether any unique index (even partial or composite) includes ``column``."""
        return any(column in ix.column_names for ix in self.unique_indexes())

    def single_column_uniques(self, column: str) -> list[Index]:
        """Valid unique indexes whose whole key is ``column`` (partial ones included)."""
        return [
            ix
            for ix in self.unique_indexes()
            if ix.valid and ix.columns == (column,) and not ix.has_expressions
        ]


@dataclass(frozen=True)
class Orm:
    """The migration tool whose bookkeeping table the database holds.

    ``history`` is what the tool's table says was applied last: Alembic's revision, or
    Django's latest migration per app (``app`` -> ``name``), or Prisma's latest migration.
    """

    name: str  # "django" | "alembic" | "prisma"
    table: str
    history: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class UnreadableTable:
    """A table the doctor's role may not read: no SELECT on it, or no USAGE on its schema
    (or, on SQLite, a virtual table whose module this build lacks).

    Every check skips it (one such table used to end the whole run with "cannot read") and
    the doctor reports it as a note; ``grants`` are the statements that let the role read it.
    """

    name: str
    # The privileges it lacks, in words ("USAGE on schema vault", "SELECT").
    missing: tuple[str, ...]
    grants: tuple[str, ...]
    # Why it cannot be read when no privilege is missing (SQLite: a virtual table whose
    # module or tokenizer this SQLite build does not have), in words.
    reason: str | None = None


@dataclass
class Catalog:
    dialect: str
    server_version: tuple[int, ...]
    tables: dict[str, Table] = field(default_factory=dict)
    sequences: list[Sequence] = field(default_factory=list)
    # (sequence, table, column) the role may not read (no SELECT on the sequence).
    unreadable_sequences: list[tuple[str, str, str]] = field(default_factory=list)
    # Tables the role may not read: not in ``tables``, so no check reads and no repair
    # plans on them.
    unreadable_tables: list[UnreadableTable] = field(default_factory=list)
    views: list[SchemaObject] = field(default_factory=list)
    orm: Orm | None = None
    # The role the doctor connects as (what a GRANT in a fix must name).
    role: str | None = None

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)


# Functions (and cast types) an expression index key may apply while its uniqueness still
# implies the uniqueness of the columns it reads: each returns NULL only for a NULL argument.
_NULL_ONLY_ON_NULL = frozenset(
    {
        "lower", "upper", "trim", "ltrim", "rtrim", "btrim", "unaccent", "casefold",
        "text", "varchar", "character", "varying", "citext", "collate", "nocase", "binary",
    }
)  # fmt: skip
_EXPR_TOKEN = re.compile(r"""'(?:[^']|'')*'|"((?:[^"]|"")*)"|([A-Za-z_][\w$]*)|(\S)""")


def expression_columns(expression: str, columns: dict[str, Column] | list[str]) -> set[str] | None:
    """The columns ``expression`` (an index key part) reads, or ``None`` unless it reads at
    least one and every other word in it is in :data:`_NULL_ONLY_ON_NULL`.

    Names are matched without regard to case (SQLite's catalog text is lower-cased; a
    PostgreSQL column that differs only in case from another makes the set larger, so the
    answer errs towards "not enforced"). String literals are ignored; any other literal
    (a number, an operator other than ``(``, ``)``, ``,``, ``:`` and ``.``) makes the
    answer ``None``.
    """
    by_lower: dict[str, list[str]] = {}
    for name in columns:
        by_lower.setdefault(name.lower(), []).append(name)
    named: set[str] = set()
    for m in _EXPR_TOKEN.finditer(expression):
        quoted, word, other = m.group(1), m.group(2), m.group(3)
        if quoted is None and word is None and other is None:
            continue  # a string literal
        if other is not None:
            if other not in "(),:.":
                return None
            continue
        text = quoted.replace('""', '"') if quoted is not None else word or ""
        hits = by_lower.get(text.lower())
        if hits:
            named.update(hits)
        elif quoted is not None or text.lower() not in _NULL_ONLY_ON_NULL:
            return None
    return named or None


def check_values(definition: str, column: str) -> tuple[str, ...]:
    """The literal values a CHECK constraint allows for ``column`` (``col IN ('a', 'b')``).

    Also understands PostgreSQL's rendering ``(col)::text = ANY (ARRAY['a'::text, ...])``.
    """
    col = re.escape(column)
    ident = rf'(?:"{col}"|\b{col}\b)'
    m = re.search(ident + r"\s*(?:\)\s*)?(?:::\w+\s*)?IN\s*\(([^)]*)\)", definition, re.I)
    if m is None:
        m = re.search(ident + r"[^=]*=\s*ANY\s*\(\s*\(?\s*ARRAY\[([^\]]*)\]", definition, re.I)
    if m is None:
        return ()
    return tuple(re.findall(r"'((?:[^']|'')*)'", m.group(1)))
