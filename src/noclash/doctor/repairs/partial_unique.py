"""Make a key unique among active rows only (seed 002).

From ``lifecycle-unique``: the new partial index is built first (``CONCURRENTLY`` on
PostgreSQL), then the old unique index or constraint dropped, so uniqueness among active
rows holds at every moment. On SQLite a UNIQUE written inside CREATE TABLE goes with the
table rebuild (:meth:`~noclash.doctor.dialects.sqlite.SQLiteDoctor.rebuild_without_unique`)
in the same transaction. Partial indexes cannot back a constraint, so no ``USING INDEX``.

From ``duplicate-keys`` / ``missing-unique-index`` on a stated key of a table with a
lifecycle, active duplicates may exist. Policy: in each group the row with the latest
activity (``last_message_at``, ``updated_at``, ``created_at``, else the largest key) stays
active; the others take the first closed state. No row is deleted and no message moves:
messages keep pointing at their conversation.
"""

from __future__ import annotations

from noclash.doctor import fixes
from noclash.doctor.catalog import Index
from noclash.doctor.context import Context
from noclash.doctor.lifecycle import Lifecycle, active_predicate
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action, SchemaChange

ID = "partial-unique"


def plan(ctx: Context, finding: Finding) -> Action | None:
    ix: Index | None = getattr(finding.evidence, "unique_index", None)
    life: Lifecycle | None = getattr(finding.evidence, "lifecycle", None)
    if life is None:
        return None
    tname = finding.table or ""
    columns = ix.column_names if ix else finding.columns
    steps = fixes.partial_unique(ctx, tname, columns, life, ix, close_duplicates=ix is None)
    if steps is None:
        return None  # duplicates to close but no stable row key
    guard = fixes.duplicates_left_sql(ctx, tname, columns, among=active_predicate(ctx, life))
    schema = [
        SchemaChange(
            "add_unique",
            tname,
            fixes.active_index_name(ctx, tname, columns),
            columns,
            state_column=life.column,
            states=life.active,
        )
    ]
    if ix is not None:
        schema.insert(
            0,
            SchemaChange(
                "drop_unique",
                tname,
                ix.constraint or ix.name,
                columns,
                constraint=bool(ix.constraint),
            ),
        )
    rebuild = ix is not None and ix.inline and not ctx.dialect.can_drop_table_constraint
    verb = f"replace {ix.name} by" if ix else "build"
    return Action(
        repair=ID,
        finding=finding,
        summary=(
            f"{verb} a unique index over {life.column} IN ({', '.join(life.active)}) rows"
            + (
                " (rebuilding the table: SQLite cannot drop a UNIQUE of CREATE TABLE)"
                if rebuild
                else ""
            )
            + (
                f"; active duplicates: the latest stays active, the others become {life.closed[0]}"
                if ix is None
                else ""
            )
        ),
        steps=steps,
        locks=ctx.dialect.locks(
            "update", *(("rebuild",) if rebuild else ()), "concurrent", "constraint"
        ),
        changes=(life.column,) if ix is None else (),
        guard=guard,
        schema=schema,
    )
