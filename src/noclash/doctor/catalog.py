"""What the doctor knows about a database's schema, read once per run.

The catalog is plain data read from the system catalog (``pg_catalog``) or from SQLite's
``sqlite_schema`` and pragmas, not from SQLAlchemy's reflection: the doctor needs facts that
reflection does not expose (``indisvalid``, ``indisready``, ``NULLS NOT DISTINCT``, partial
index predicates on SQLite, which index backs which constraint, sequence ownership).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Tables the doctor and repair create or that belong to migration tools; never inspected.
BACKUP_TABLE = "noclash_repair_backup"
IGNORED_TABLES = frozenset({BACKUP_TABLE})

_TEXT_TYPES = re.compile(r"char|text|clob|string|citext", re.I)
_INT_TYPES = re.compile(r"int|serial", re.I)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    default: str | None = None
    primary_key: bool = False
    identity: bool = False

    @property
    def is_text(self) -> bool:
        return bool(_TEXT_TYPES.search(self.type))

    @property
    def is_uuid(self) -> bool:
        return self.type.lower() == "uuid"

    @property
    def is_integer(self) -> bool:
        return bool(_INT_TYPES.search(self.type))


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

    @property
    def has_expressions(self) -> bool:
        return any(c is None for c in self.columns)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c is not None)


@dataclass(frozen=True)
class Sequence:
    """A sequence owned by a column (serial or identity), PostgreSQL only."""

    name: str
    table: str
    column: str
    # ``None`` until the first ``nextval`` (or when the role may not read the sequence).
    last_value: int | None
    start_value: int = 1
    increment: int = 1

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


@dataclass
class Table:
    name: str
    schema: str | None
    columns: dict[str, Column] = field(default_factory=dict)
    indexes: list[Index] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    # Enum labels per column (PostgreSQL enum types).
    enum_values: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
            if ix.has_expressions or not ix.valid:
                continue
            if whole_table and ix.predicate:
                continue
            if set(ix.column_names) <= wanted:
                return True
        return False

    def covered_by_unique(self, column: str) -> bool:
        """Whether any unique index (even partial or composite) includes ``column``."""
        return any(column in ix.column_names for ix in self.unique_indexes())


@dataclass
class Catalog:
    dialect: str
    server_version: tuple[int, ...]
    tables: dict[str, Table] = field(default_factory=dict)
    sequences: list[Sequence] = field(default_factory=list)
    # (sequence, table, column) the role may not read (no SELECT on the sequence).
    unreadable_sequences: list[tuple[str, str, str]] = field(default_factory=list)

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)


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
