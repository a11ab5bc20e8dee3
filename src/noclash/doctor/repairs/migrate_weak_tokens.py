"""Move weak tokens to a legacy column and give rows UUIDv4 (finding ``weak-tokens``).

Why not ``ALTER COLUMN ... TYPE uuid USING col::uuid`` (seeds 000/001): it fails on every
short token. Why not just regenerate: every embedded widget and published link carries the
old token. So the old value moves to ``<column>_legacy`` (indexed, unique when it was), the
column gets a UUIDv4 per row and, on PostgreSQL, a ``gen_random_uuid()`` default for new
rows. The application resolves a token by ``column = :t OR column_legacy = :t``; no new
value ever goes into the legacy column, so its collision risk stops growing.
"""

from __future__ import annotations

from noclash.doctor import fixes
from noclash.doctor.context import Context
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action, SchemaChange

ID = "migrate-weak-tokens"


def plan(ctx: Context, finding: Finding) -> Action | None:
    tname, (cname,) = finding.table or "", finding.columns
    legacy = fixes.legacy_column(cname)
    rows = getattr(finding.evidence, "rows", None) or ctx.row_count(tname)
    schema = []
    if legacy not in ctx.catalog.tables[tname].columns:
        schema.append(SchemaChange("add_column", tname, legacy, (legacy,)))
    schema.append(
        SchemaChange(
            "add_index",
            tname,
            fixes.index_name(
                ctx,
                tname,
                (legacy,),
                unique=ctx.catalog.tables[tname].has_unique_on((cname,)),
            ),
            (legacy,),
        )
    )
    return Action(
        repair=ID,
        finding=finding,
        summary=(
            f"keep {tname}.{cname}'s weak tokens ({rows} rows) resolving in {legacy} and give "
            f"every row (and new rows) a UUIDv4 {cname}"
        ),
        steps=fixes.migrate_weak_tokens(ctx, tname, cname),
        locks=ctx.dialect.locks("alter", "update", "concurrent"),
        changes=(cname, legacy),
        schema=schema,
    )
