"""Give every row of a unique uuid key a value (finding ``null-keys``, seed 003).

Missing means the empty string, and NULL where NULLs collide (``NULLS NOT DISTINCT``) or
the key is stated with ``--key``. Each gets a fresh UUIDv4 from the database
(``gen_random_uuid()``, or SQLite's ``randomblob``), spelled like the column's existing
values (with or without hyphens). The column stays nullable: whether the application may
write NULL is its own business; a unique index is added if none covers the column.
"""

from __future__ import annotations

from noclash.doctor import fixes
from noclash.doctor.checks.null_keys import NullKeysEvidence
from noclash.doctor.context import Context
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action, SchemaChange

ID = "backfill-keys"


def plan(ctx: Context, finding: Finding) -> Action | None:
    tname, (cname,) = finding.table or "", finding.columns
    ev = finding.evidence
    assert isinstance(ev, NullKeysEvidence)
    missing = fixes.missing_values(ctx, tname, cname, nulls=ev.nulls_collide)
    steps = fixes.backfill(ctx, tname, cname, missing, hyphens=ev.hyphens)
    indexed = ctx.catalog.tables[tname].covered_by_unique(cname)
    return Action(
        repair=ID,
        finding=finding,
        summary=f"give {ev.null + ev.empty} rows of {tname} a UUIDv4 {cname}",
        steps=steps,
        locks=ctx.dialect.locks("update", *(() if indexed else ("concurrent",))),
        changes=(cname,),
        schema=[]
        if indexed
        else [SchemaChange("add_unique", tname, fixes.index_name(ctx, tname, (cname,)), (cname,))],
    )
