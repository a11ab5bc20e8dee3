"""Replace a unique index that ignores the lifecycle by a partial one (seed 002).

The new index is built first (``CONCURRENTLY`` on PostgreSQL), then the old one dropped,
so uniqueness among active rows holds at every moment. Partial indexes cannot back a
constraint, so no ``USING INDEX`` here.

Policy for active duplicates (possible only if the old index was already gone or invalid):
in each group the row with the latest activity (``last_message_at``, ``updated_at``,
``created_at``, else the largest key) stays active; the others take the first closed state.
No row is deleted and no message moves: messages keep pointing at their conversation.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from noclash.doctor.catalog import Index
from noclash.doctor.checks.lifecycle_unique import Lifecycle, active_predicate, partial_name
from noclash.doctor.context import Context
from noclash.doctor.intent import snake
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action, batches, row_key, select_rows
from noclash.doctor.repairs.backup import Backup
from noclash.doctor.repairs.locks import describe

ID = "partial-unique"
_ACTIVITY = ("last_message_at", "last_activity_at", "updated_at", "modified_at", "created_at")


def activity_column(ctx: Context, table: str) -> str | None:
    by_snake = {snake(c): c for c in ctx.catalog.tables[table].columns}
    return next((by_snake[c] for c in _ACTIVITY if c in by_snake), None)


def plan(ctx: Context, finding: Finding) -> Action | None:
    ix: Index | None = finding.details["index"]
    life: Lifecycle = finding.details["lifecycle"]
    tname = finding.table or ""
    columns = ix.column_names if ix else finding.columns
    t = ctx.t(tname)
    cols = ", ".join(ctx.q(c) for c in columns)
    active = active_predicate(ctx, life)
    conc = " CONCURRENTLY" if ctx.dialect.supports_concurrent_index else ""
    create = (
        f"CREATE UNIQUE INDEX{conc} IF NOT EXISTS {ctx.q(partial_name(tname, columns))} "
        f"ON {t} ({cols}) WHERE {active}"
    )
    drops: list[str] = []
    if ix is not None and ix.constraint:
        if not ctx.dialect.can_drop_table_constraint:
            return None  # a UNIQUE inside SQLite's CREATE TABLE: needs a table rebuild
        drops = [f"ALTER TABLE {t} DROP CONSTRAINT {ctx.q(ix.constraint)}"]
    elif ix is not None:
        drops = [f"DROP INDEX{conc} IF EXISTS {ctx.ix(tname, ix.name)}"]
    closed = life.closed[0]
    stmts = [
        f"UPDATE {t} SET {ctx.q(life.column)} = '{closed}' -- active duplicates but the latest",
        create,
        *drops,
    ]

    def apply(ctx: Context, backup: Backup, progress: Callable[[str], None]) -> list[str]:
        key = row_key(ctx, tname)
        order = activity_column(ctx, tname)
        latest = f"{ctx.q(order)} DESC, {key} DESC" if order else f"{key} DESC"
        groups = ctx.conn.execute(
            sa.text(f"SELECT {cols} FROM {t} WHERE {active} GROUP BY {cols} HAVING count(*) > 1")
        ).all()
        losers: list = []
        for g in groups:
            match = " AND ".join(f"{ctx.q(c)} = :g{i}" for i, c in enumerate(columns))
            params = {f"g{i}": v for i, v in enumerate(g)}
            ids = (
                ctx.conn.execute(
                    sa.text(f"SELECT {key} FROM {t} WHERE {active} AND {match} ORDER BY {latest}"),
                    params,
                )
                .scalars()
                .all()
            )
            losers.extend(ids[1:])
        if losers:
            rows = [
                r
                for chunk in batches(losers)
                for r in select_rows(
                    ctx,
                    tname,
                    f"{key} IN ({', '.join(':k' + str(i) for i in range(len(chunk)))})",
                    {f"k{i}": v for i, v in enumerate(chunk)},
                )
            ]
            backup.save(ctx.conn, ID, tname, rows)
            update = sa.text(f"UPDATE {t} SET {ctx.q(life.column)} = :s WHERE {key} = :k")
            for n, chunk in enumerate(batches(losers), 1):
                progress(f"{ID} {tname}: closing duplicates, batch {n}")
                ctx.conn.execute(update, [{"s": closed, "k": k} for k in chunk])
        if conc:
            return [create, *drops]
        ctx.conn.exec_driver_sql(create)
        for drop in drops:
            ctx.conn.exec_driver_sql(drop)
        return []

    return Action(
        repair=ID,
        check=finding.check,
        table=tname,
        columns=columns,
        summary=(
            f"{f'replace {ix.name} by' if ix else 'build'} a unique index over {life.column} IN "
            f"({', '.join(life.active)}) rows; active duplicates: the latest stays active, "
            f"the others become {closed}"
        ),
        statements=stmts,
        locks=describe(ctx, "update", "concurrent", "constraint"),
        apply=apply,
    )
