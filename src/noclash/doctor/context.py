"""What every check receives: one connection, the catalog, the options, and SQL helpers.

Checks share expensive answers (row counts, duplicate counts, token analyses) through
:meth:`Context.memo`, so running all checks scans each column at most once per question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.doctor.catalog import Catalog, Table
from noclash.doctor.connect import reading
from noclash.doctor.dialects import DoctorDialect
from noclash.doctor.intent import KeySpec
from noclash.doctor.orm import idiom

T = TypeVar("T")

DEFAULT_TOKEN_THRESHOLD = 1e-6
DEFAULT_GROWTH = 10
SAMPLE_LIMIT = 5

# A quoted identifier or string literal, as the SQL the doctor writes spells them.
_QUOTED = re.compile(r"\"(?:[^\"]|\"\")*\"|'(?:[^']|'')*'")


def text_sql(sql: str) -> sa.TextClause:
    """``sql`` as :func:`sqlalchemy.text`, whose ``:name`` parameters are only those outside
    quotes: a colon inside a quoted name (``"user :id"``) or a literal (a state
    ``'on :hold'``) is text, escaped for ``text()`` (unescaped, it was taken for a bind
    parameter and the run ended in a traceback)."""
    return sa.text(_QUOTED.sub(lambda m: m.group(0).replace(":", "\\:"), sql))


@dataclass(frozen=True)
class DuplicateGroups:
    groups: int
    rows: int
    # The biggest groups: key values then the count.
    top: list[Any]


@dataclass(frozen=True)
class Options:
    """Knobs of a doctor run; the CLI flags have the same names."""

    keys: tuple[KeySpec, ...] = ()
    exclude: tuple[str, ...] = ()
    # Flag random tokens whose birthday-bound collision probability at ``growth`` times
    # today's rows exceeds this.
    token_threshold: float = DEFAULT_TOKEN_THRESHOLD
    growth: int = DEFAULT_GROWTH
    # Values sampled per column to estimate a token's alphabet and length.
    sample_size: int = 2000


@dataclass
class Context:
    conn: Connection
    dialect: DoctorDialect
    catalog: Catalog
    options: Options = field(default_factory=Options)
    on_progress: Callable[[str], None] | None = None
    _memo: dict[Any, Any] = field(default_factory=dict)

    # -- SQL helpers -----------------------------------------------------------------------
    def q(self, name: str) -> str:
        return self.dialect.quote(self.conn, name)

    def t(self, table: Table | str) -> str:
        if isinstance(table, str):
            table = self.catalog.tables[table]
        return self.dialect.table_sql(self.conn, table)

    def not_null(self, columns: Sequence[str]) -> str:
        """SQL predicate: no NULL in ``columns``. Rows with a NULL in a key never collide
        (NULL equals nothing), so they count in no duplicate group and no fix touches them."""
        return " AND ".join(f"{self.q(c)} IS NOT NULL" for c in columns)

    def ix(self, table: Table | str, index: str) -> str:
        """An index name for DROP/REINDEX: qualified by its table's schema (indexes live
        in their table's schema, which need not be on the search path)."""
        if isinstance(table, str):
            table = self.catalog.tables[table]
        return self.dialect.index_sql(self.conn, table, index)

    def rows(self, sql: str, params: dict[str, Any] | None = None, *, what: str) -> list[Any]:
        """Run ``sql`` (``:name`` parameters, as in :func:`sqlalchemy.text`)."""
        with reading(what):
            return list(self.conn.execute(text_sql(sql), params or {}).all())

    def scalar(self, sql: str, params: dict[str, Any] | None = None, *, what: str) -> Any:
        with reading(what):
            return self.conn.execute(text_sql(sql), params or {}).scalar()

    def step(self, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(message)

    def memo(self, key: Any, compute: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # -- shared questions ------------------------------------------------------------------
    def idiom(self) -> str | None:
        """How the ORM that manages this schema would make a change (for fixes)."""
        return idiom(self.catalog.orm)

    def row_count(self, table: str) -> int:
        def count() -> int:
            self.step(f"counting rows of {table}")
            return int(self.scalar(f"SELECT count(*) FROM {self.t(table)}", what=table) or 0)

        return self.memo(("rows", table), count)

    def pk_expr(self, table: str) -> tuple[str, ...]:
        """SQL expressions that identify a row: the primary key, else SQLite's rowid."""
        pk = self.catalog.tables[table].primary_key
        if pk:
            return tuple(self.q(c) for c in pk)
        return (self.dialect.evidence_row_id,)

    def sample_ids(self, table: str, where: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Up to :data:`SAMPLE_LIMIT` row identifiers matching ``where``, for evidence."""
        pk = self.pk_expr(table)
        rows = self.rows(
            f"SELECT {', '.join(pk)} FROM {self.t(table)} WHERE {where} "
            f"ORDER BY {', '.join(pk)} LIMIT {SAMPLE_LIMIT}",
            params,
            what=table,
        )
        return [plain(r[0]) if len(r) == 1 else [plain(v) for v in r] for r in rows]

    def duplicate_groups(
        self, table: str, columns: Sequence[str], where: str | None = None
    ) -> DuplicateGroups:
        """Groups of rows sharing ``columns`` (among rows matching ``where``): counts and
        the biggest groups. Rows with a NULL in the key never collide, so never count."""

        def compute() -> DuplicateGroups:
            self.step(f"grouping {table}({', '.join(columns)})")
            key = ", ".join(self.q(c) for c in columns)
            not_null = self.not_null(columns)
            if where:
                not_null = f"{not_null} AND ({where})"
            base = (
                f"SELECT {key}, count(*) AS n FROM {self.t(table)} WHERE {not_null} "
                f"GROUP BY {key} HAVING count(*) > 1"
            )
            total = self.rows(
                f"SELECT count(*), coalesce(sum(n), 0) FROM ({base}) AS g", what=table
            )[0]
            top = self.rows(
                f"{base} ORDER BY count(*) DESC, {key} LIMIT {SAMPLE_LIMIT}", what=table
            )
            return DuplicateGroups(groups=int(total[0]), rows=int(total[1]), top=top)

        return self.memo(("dups", table, tuple(columns), where), compute)


def plain(value: Any) -> Any:
    """A JSON-friendly form of a key value (uuid, bytes, datetimes become text)."""
    if value is None or isinstance(value, int | float | str | bool):
        return value
    return str(value)
