"""A unique index on a table with a lifecycle that ignores the lifecycle.

Seed 002: ``@@unique([instagramConnectionId, psid])`` on conversations that can be CLOSED.
Once a customer's conversation is closed, their next message cannot open a new one. The
seed's fix (drop the unique, check in code) trades the error for races; the right index is
partial: unique among active rows only.

Precision: the unique index is declared; that it should be partial is inferred. The repair
never replaces a UNIQUE that carries an ``ON CONFLICT`` clause (SQLite's ``REPLACE`` or
``IGNORE`` decide what the application's inserts do), and the finding says what an upsert
on the key must then write (``ON CONFLICT (cols) WHERE <predicate>``). The state
column is found by name (``status``, ``state``, ``lifecycle``, ``stage``), its closed states
by word (``closed``, ``archived``, ...) among enum labels, CHECK literals and the data, and
an index that includes a column identifying the row itself (``id``, ``slug``, ``email``,
...) is left alone. It is an error only when closed rows exist that block a new row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from noclash.doctor import fixes
from noclash.doctor.catalog import Index, Table
from noclash.doctor.context import Context
from noclash.doctor.dialects import literal
from noclash.doctor.intent import is_own_identifier, lifecycle_column
from noclash.doctor.lifecycle import Lifecycle, table_lifecycle
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "lifecycle-unique"
TITLE = "Unique index blocks new rows after old ones are closed"
HELP = (
    "Replace the index by a partial unique index over active rows "
    "(`WHERE status IN ('OPEN', ...)`); `noclash repair` builds it and drops the old one "
    "(on SQLite, a UNIQUE written in CREATE TABLE goes with a table rebuild; one with an "
    "`ON CONFLICT` clause is left to a person). An upsert on the key must then name the "
    "predicate: `ON CONFLICT (cols) WHERE status IN (...)`."
)
LINKS = (
    ("Partial indexes", "https://www.postgresql.org/docs/current/indexes-partial.html"),
    ("SQLite partial indexes", "https://www.sqlite.org/partialindex.html"),
    ("SQLite table rebuild", "https://www.sqlite.org/lang_altertable.html#otheralter"),
    ("repair: partial-unique", "repair.md#partial-unique"),
)
# Fixture (noclash.doctor.fixtures) whose report is shown on the docs page.
EXAMPLE = "closed-chat"


@dataclass(frozen=True)
class LifecycleUniqueEvidence(Evidence):
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"unique_index", "lifecycle"})

    active_states: tuple[str, ...]
    closed_rows: int
    closed_states: tuple[str, ...]
    index: str
    state_column: str
    lifecycle: Lifecycle | None = None
    unique_index: Index | None = None


def blocking_indexes(table: Table, state_column: str) -> list[Index]:
    """Whole-table unique indexes on counterpart keys that leave out the state column."""
    out = []
    for ix in table.unique_indexes():
        if ix.primary or ix.predicate or ix.has_expressions or not ix.valid:
            continue
        if state_column in ix.column_names:
            continue
        if any(is_own_identifier(c) for c in ix.column_names):
            continue
        out.append(ix)
    return out


def run(ctx: Context) -> Iterator[Finding]:
    for tname, table in ctx.catalog.tables.items():
        col = lifecycle_column(table)
        if col is None:
            continue
        candidates = blocking_indexes(table, col.name)
        if not candidates:
            continue
        life = table_lifecycle(ctx, tname)
        if life is None:
            continue
        closed_list = ", ".join(literal(v) for v in life.closed)
        closed_rows = int(
            ctx.scalar(
                f"SELECT count(*) FROM {ctx.t(tname)} "
                f"WHERE {ctx.dialect.as_text(ctx.q(life.column))} IN ({closed_list})",
                what=tname,
            )
        )
        for ix in candidates:
            cols = ", ".join(ix.column_names)
            conflict = ctx.dialect.unique_conflict(table, ix)
            steps = (
                None
                if conflict
                else fixes.partial_unique(
                    ctx, tname, ix.column_names, life, ix, close_duplicates=False
                )
            )
            if conflict:
                why = (
                    f"; it says ON CONFLICT {conflict}, which decides what conflicting inserts "
                    f"do and no partial index can keep: a person must change it"
                )
            else:
                why = (
                    f"; once it is partial, an upsert on ({cols}) must name its predicate: "
                    f"ON CONFLICT ({cols}) WHERE {life.column} IN "
                    f"({', '.join(repr(s) for s in life.active)})"
                )
            yield Finding(
                check=ID,
                severity=Severity.ERROR if closed_rows else Severity.WARNING,
                table=tname,
                columns=ix.column_names,
                message=(
                    f"unique index {ix.name} on {tname}({cols}) ignores "
                    f"{life.column}: {closed_rows} {'/'.join(life.closed)} rows keep their key "
                    f"and block a new active row with the same key{why}"
                ),
                evidence=LifecycleUniqueEvidence(
                    active_states=life.active,
                    closed_rows=closed_rows,
                    closed_states=life.closed,
                    index=ix.name,
                    state_column=life.column,
                    lifecycle=life,
                    unique_index=ix,
                ),
                fix=Fix(
                    statements=fixes.statements(steps or []),
                    repair=None if conflict else "partial-unique",
                    idiom=ctx.idiom(),
                ),
            )


__all__ = ["HELP", "ID", "TITLE", "LifecycleUniqueEvidence", "run"]
