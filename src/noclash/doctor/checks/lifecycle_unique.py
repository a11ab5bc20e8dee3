"""A unique index on a table with a lifecycle that ignores the lifecycle.

Seed 002: ``@@unique([instagramConnectionId, psid])`` on conversations that can be CLOSED.
Once a customer's conversation is closed, their next message cannot open a new one. The
seed's fix (drop the unique, check in code) trades the error for races; the right index is
partial: unique among active rows only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from noclash.doctor.catalog import Index, Table, check_values
from noclash.doctor.context import Context
from noclash.doctor.intent import is_closed_state, is_own_identifier, lifecycle_column
from noclash.doctor.model import Finding, Fix, Severity

ID = "lifecycle-unique"
TITLE = "Unique index blocks new rows after old ones are closed"
HELP = (
    "Replace the index by a partial unique index over active rows "
    "(`WHERE status IN ('OPEN', ...)`); `noclash repair` builds it and drops the old one."
)
LINKS = (
    ("Partial indexes", "https://www.postgresql.org/docs/current/indexes-partial.html"),
    ("SQLite partial indexes", "https://www.sqlite.org/partialindex.html"),
    ("repair: partial-unique", "repair.md#partial-unique"),
)
# Fixture (noclash.doctor.fixtures) whose report is shown on the docs page.
EXAMPLE = "closed-chat"


@dataclass(frozen=True)
class Lifecycle:
    column: str
    active: tuple[str, ...]
    closed: tuple[str, ...]


def states(ctx: Context, tname: str, table: Table, column: str) -> tuple[str, ...]:
    """Every state the column may hold: enum labels, CHECK literals, then values in use."""
    found: list[str] = list(table.enum_values.get(column, ()))
    for con in table.constraints:
        if con.kind == "check":
            found.extend(check_values(con.definition, column))
    q = ctx.q(column)
    for (value,) in ctx.rows(
        f"SELECT DISTINCT {ctx.dialect.as_text(q)} FROM {ctx.t(tname)} "
        f"WHERE {q} IS NOT NULL ORDER BY 1 LIMIT 50",
        what=tname,
    ):
        found.append(value)
    return tuple(dict.fromkeys(found))


def lifecycle(ctx: Context, tname: str) -> Lifecycle | None:
    table = ctx.catalog.tables[tname]
    col = lifecycle_column(table)
    if col is None:
        return None
    all_states = states(ctx, tname, table, col.name)
    closed = tuple(s for s in all_states if is_closed_state(s))
    active = tuple(s for s in all_states if not is_closed_state(s))
    if not closed or not active:
        return None
    return Lifecycle(col.name, active, closed)


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


def active_predicate(ctx: Context, life: Lifecycle) -> str:
    values = ", ".join("'" + v.replace("'", "''") + "'" for v in life.active)
    return f"{ctx.q(life.column)} IN ({values})"


def partial_name(table: str, columns: tuple[str, ...]) -> str:
    return f"{table.rsplit('.', 1)[-1]}_{'_'.join(columns)}_active_key"[:63]


def key_lifecycle(ctx: Context, tname: str, columns: tuple[str, ...]) -> Lifecycle | None:
    """The lifecycle a key should be unique within, if any.

    A key of the counterpart (``(connection_id, psid)``) on a table with a lifecycle is
    unique among active rows only: closed rows may repeat it.
    """
    table = ctx.catalog.tables[tname]
    col = lifecycle_column(table)
    if col is None or col.name in columns or any(is_own_identifier(c) for c in columns):
        return None
    return ctx.memo(("lifecycle", tname), lambda: lifecycle(ctx, tname))


def run(ctx: Context) -> Iterator[Finding]:
    for tname, table in ctx.catalog.tables.items():
        col = lifecycle_column(table)
        if col is None:
            continue
        candidates = blocking_indexes(table, col.name)
        if not candidates:
            continue
        life = ctx.memo(("lifecycle", tname), lambda t=tname: lifecycle(ctx, t))
        if life is None:
            continue
        closed_list = ", ".join("'" + v.replace("'", "''") + "'" for v in life.closed)
        closed_rows = int(
            ctx.scalar(
                f"SELECT count(*) FROM {ctx.t(tname)} "
                f"WHERE {ctx.dialect.as_text(ctx.q(life.column))} IN ({closed_list})",
                what=tname,
            )
        )
        for ix in candidates:
            cols = ", ".join(ctx.q(c) for c in ix.column_names)
            new = ctx.q(partial_name(tname, ix.column_names))
            concurrently = " CONCURRENTLY" if ctx.dialect.supports_concurrent_index else ""
            drop = (
                f"ALTER TABLE {ctx.t(tname)} DROP CONSTRAINT {ctx.q(ix.constraint)}"
                if ix.constraint
                else f"DROP INDEX{concurrently} {ctx.ix(tname, ix.name)}"
            )
            yield Finding(
                check=ID,
                severity=Severity.ERROR if closed_rows else Severity.WARNING,
                table=tname,
                columns=ix.column_names,
                message=(
                    f"unique index {ix.name} on {tname}({', '.join(ix.column_names)}) ignores "
                    f"{life.column}: {closed_rows} {'/'.join(life.closed)} rows keep their key "
                    f"and block a new active row with the same key"
                ),
                evidence={
                    "active_states": list(life.active),
                    "closed_rows": closed_rows,
                    "closed_states": list(life.closed),
                    "index": ix.name,
                    "state_column": life.column,
                },
                fix=Fix(
                    sql=(
                        f"CREATE UNIQUE INDEX{concurrently} {new} ON {ctx.t(tname)} ({cols}) "
                        f"WHERE {active_predicate(ctx, life)}; {drop};"
                    ),
                    repair="partial-unique",
                ),
                details={"index": ix, "lifecycle": life},
            )
