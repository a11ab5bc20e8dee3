"""Build the missing unique index for a key stated with ``--key`` (``missing-unique-index``).

PostgreSQL: ``CREATE UNIQUE INDEX CONCURRENTLY`` (no write lock), then
``ADD CONSTRAINT ... UNIQUE USING INDEX`` so the key shows up as a constraint (what ORMs and
``ON CONFLICT ON CONSTRAINT`` expect). If the concurrent build fails it leaves an invalid
index: the runner drops it again so the database is as before.
"""

from __future__ import annotations

from noclash.doctor import fixes
from noclash.doctor.context import Context
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action, SchemaChange

ID = "add-unique-index"


def plan(ctx: Context, finding: Finding) -> Action | None:
    table, columns = finding.table or "", finding.columns
    return Action(
        repair=ID,
        finding=finding,
        summary=f"build a unique index on {table}({', '.join(columns)})",
        steps=fixes.add_unique_index(ctx, table, columns),
        locks=ctx.dialect.locks("concurrent", "constraint"),
        guard=fixes.duplicates_left_sql(ctx, table, columns),
        schema=[
            SchemaChange(
                "add_unique",
                table,
                fixes.index_name(ctx, table, columns),
                columns,
                constraint=ctx.dialect.supports_constraint_using_index,
            )
        ],
    )
