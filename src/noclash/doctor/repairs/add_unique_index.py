"""Build the missing unique index (finding ``missing-unique-index``).

PostgreSQL: ``CREATE UNIQUE INDEX CONCURRENTLY`` (no write lock), then
``ADD CONSTRAINT ... UNIQUE USING INDEX`` so the key shows up as a constraint (what ORMs and
``ON CONFLICT ON CONSTRAINT`` expect). If the concurrent build fails it leaves an invalid
index: the repair drops it again so the database is as before.
"""

from __future__ import annotations

from collections.abc import Callable

from noclash.doctor.checks.missing_unique_index import index_name
from noclash.doctor.context import Context
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action
from noclash.doctor.repairs.backup import Backup
from noclash.doctor.repairs.locks import describe

ID = "add-unique-index"


def statements(ctx: Context, table: str, columns: tuple[str, ...]) -> list[str]:
    name = ctx.q(index_name(table, columns))
    cols = ", ".join(ctx.q(c) for c in columns)
    if ctx.dialect.supports_concurrent_index:
        out = [f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {ctx.t(table)} ({cols})"]
    else:
        out = [f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {ctx.t(table)} ({cols})"]
    if ctx.dialect.supports_constraint_using_index:
        out.append(f"ALTER TABLE {ctx.t(table)} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}")
    return out


def split(ctx: Context, stmts: list[str]) -> tuple[list[str], list[str]]:
    """(in the transaction, after commit): concurrent builds run outside any transaction."""
    if ctx.dialect.supports_concurrent_index:
        return [], stmts
    return stmts, []


def build(ctx: Context, stmts: list[str]) -> list[str]:
    """Run the index statements that belong in the transaction; return the ones to run
    after its commit (``CREATE INDEX CONCURRENTLY`` cannot run inside one)."""
    now, later = split(ctx, stmts)
    for s in now:
        ctx.conn.exec_driver_sql(s)
    return later


def plan(ctx: Context, finding: Finding) -> Action | None:
    table, columns = finding.table or "", finding.columns
    stmts = statements(ctx, table, columns)

    def apply(ctx: Context, backup: Backup, _progress: Callable[[str], None]) -> list[str]:
        return build(ctx, stmts)

    return Action(
        repair=ID,
        check=finding.check,
        table=table,
        columns=columns,
        summary=f"build a unique index on {table}({', '.join(columns)})",
        statements=stmts,
        locks=describe(ctx, "concurrent", "constraint"),
        apply=apply,
    )
