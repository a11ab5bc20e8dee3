"""A key the application treats as unique, with no unique index behind it.

Checking in code ("SELECT then INSERT", seed 000's helper, seed 002's five checks) is a
race: two requests both see "free" and both insert. Only a unique index makes it a rule.
"""

from __future__ import annotations

from collections.abc import Iterator

from noclash.doctor.checks.lifecycle_unique import (
    active_predicate,
    key_lifecycle,
    partial_name,
)
from noclash.doctor.context import Context
from noclash.doctor.intent import intended_keys
from noclash.doctor.model import Finding, Fix, Severity

ID = "missing-unique-index"
TITLE = "Unique keys with no unique index"
HELP = (
    "Build the unique index (`CREATE UNIQUE INDEX CONCURRENTLY`, then "
    "`ADD CONSTRAINT ... UNIQUE USING INDEX`): `noclash repair` does it."
)
LINKS = (
    (
        "ADD table_constraint_using_index",
        "https://www.postgresql.org/docs/current/sql-altertable.html",
    ),
    ("repair: add-unique-index", "repair.md#add-unique-index"),
)


def index_name(table: str, columns: tuple[str, ...]) -> str:
    return f"{table.rsplit('.', 1)[-1]}_{'_'.join(columns)}_key"[:63]


def run(ctx: Context) -> Iterator[Finding]:
    for spec in intended_keys(ctx.catalog, ctx.options.keys):
        table = ctx.catalog.table(spec.table)
        if table is None or not set(spec.columns) <= set(table.columns):
            continue
        life = key_lifecycle(ctx, spec.table, spec.columns)
        if table.has_unique_on(spec.columns, whole_table=life is None):
            continue
        active = active_predicate(ctx, life) if life else None
        if ctx.duplicate_groups(spec.table, spec.columns, active)["groups"]:
            continue  # duplicate-keys reports it, with the duplicates to resolve first
        cols = ", ".join(ctx.q(c) for c in spec.columns)
        concurrently = " CONCURRENTLY" if ctx.dialect.supports_concurrent_index else ""
        if life:
            name = ctx.q(partial_name(spec.table, spec.columns))
            sql = (
                f"CREATE UNIQUE INDEX{concurrently} {name} ON {ctx.t(spec.table)} ({cols}) "
                f"WHERE {active};"
            )
        else:
            name = ctx.q(index_name(spec.table, spec.columns))
            sql = f"CREATE UNIQUE INDEX{concurrently} {name} ON {ctx.t(spec.table)} ({cols});"
            if ctx.dialect.supports_constraint_using_index:
                sql += (
                    f" ALTER TABLE {ctx.t(spec.table)} ADD CONSTRAINT {name} "
                    f"UNIQUE USING INDEX {name};"
                )
        why = "named like one" if spec.reason == "name" else spec.reason
        yield Finding(
            check=ID,
            severity=Severity.WARNING,
            table=spec.table,
            columns=spec.columns,
            message=(
                f"{spec.table}({', '.join(spec.columns)}) is used as a unique key "
                f"({why}) but no unique index enforces it: concurrent inserts can "
                f"both succeed"
            ),
            evidence={"intent": spec.reason, "rows": ctx.row_count(spec.table)},
            fix=Fix(sql=sql, repair="partial-unique" if life else "add-unique-index"),
            details={"index": None, "lifecycle": life},
        )
