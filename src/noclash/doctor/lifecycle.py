"""Lifecycles: a state column whose values say whether a row is still active.

Shared by the checks that decide whether a key is unique among every row or among active
rows only (``duplicate-keys``, ``missing-unique-index``, ``lifecycle-unique``) and by the
``partial-unique`` repair. Seed 002: a customer's conversation is CLOSED and the next
message must open a new one, so ``(connection, psid)`` is unique among OPEN/SNOOZED rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from noclash.doctor.catalog import Table, check_values
from noclash.doctor.context import Context
from noclash.doctor.dialects import literal
from noclash.doctor.intent import is_closed_state, is_own_identifier, lifecycle_column
from noclash.doctor.names import identifier


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


def table_lifecycle(ctx: Context, tname: str) -> Lifecycle | None:
    """The table's lifecycle (memoised), or ``None`` without both closed and active states."""

    def compute() -> Lifecycle | None:
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

    return ctx.memo(("lifecycle", tname), compute)


def key_lifecycle(ctx: Context, tname: str, columns: tuple[str, ...]) -> Lifecycle | None:
    """The lifecycle a key should be unique within, if any.

    A key of the counterpart (``(connection_id, psid)``) on a table with a lifecycle is
    unique among active rows only: closed rows may repeat it.
    """
    table = ctx.catalog.tables[tname]
    col = lifecycle_column(table)
    if col is None or col.name in columns or any(is_own_identifier(c) for c in columns):
        return None
    return table_lifecycle(ctx, tname)


class KeyScope(NamedTuple):
    """Where a key must be unique: among every row (``lifecycle`` is ``None``), or among
    the active rows of its table's lifecycle, which the SQL predicate ``active`` selects."""

    lifecycle: Lifecycle | None
    active: str | None


def unenforced_scope(ctx: Context, tname: str, columns: tuple[str, ...]) -> KeyScope | None:
    """Where the key ``columns`` must be unique, or ``None`` when a unique index already
    enforces it: a whole-table one, or, for a key unique among active rows, a partial one.

    ``duplicate-keys`` and ``missing-unique-index`` must agree on this: the second leaves a
    key with duplicates to the first.
    """
    life = key_lifecycle(ctx, tname, columns)
    if ctx.catalog.tables[tname].has_unique_on(columns, whole_table=life is None):
        return None
    return KeyScope(life, active_predicate(ctx, life) if life else None)


def active_predicate(ctx: Context, life: Lifecycle) -> str:
    return f"{ctx.q(life.column)} IN ({', '.join(literal(v) for v in life.active)})"


def partial_name(table: str, columns: tuple[str, ...]) -> str:
    """The name of the partial unique index over active rows."""
    return identifier(table, *columns, suffix="_active_key")


__all__ = [
    "KeyScope",
    "Lifecycle",
    "active_predicate",
    "key_lifecycle",
    "partial_name",
    "states",
    "table_lifecycle",
    "unenforced_scope",
]
