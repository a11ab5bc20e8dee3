"""Suffix colliding slugs, then build the unique index (``duplicate-keys`` on a stated slug
key, seed 004).

Policy: in each group the oldest row (smallest key) keeps its slug; the others get
``-<their key>`` (``hello-world-6``), unique because the key is, so no existing link changes
meaning and no row is deleted. If such a value is already taken the guard finds the
duplicate and the transaction is rolled back.
"""

from __future__ import annotations

from noclash.doctor import fixes
from noclash.doctor.context import Context
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action, SchemaChange

ID = "suffix-duplicates"


def plan(ctx: Context, finding: Finding) -> Action | None:
    tname, (cname,) = finding.table or "", finding.columns
    steps = fixes.suffix_duplicates(ctx, tname, cname)
    if steps is None:
        return None  # no stable row key to tell the oldest row
    ev = finding.evidence
    extra = getattr(ev, "rows", 0) - getattr(ev, "groups", 0)
    return Action(
        repair=ID,
        finding=finding,
        summary=(
            f"suffix {extra} duplicate {cname} values of {tname} (oldest row keeps its "
            f"value), then make it unique"
        ),
        steps=steps,
        locks=ctx.dialect.locks("update", "concurrent", "constraint"),
        changes=(cname,),
        guard=fixes.duplicates_left_sql(ctx, tname, (cname,)),
        schema=[
            SchemaChange(
                "add_unique",
                tname,
                fixes.index_name(ctx, tname, (cname,)),
                (cname,),
                constraint=ctx.dialect.supports_constraint_using_index,
            )
        ],
    )
