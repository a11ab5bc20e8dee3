"""Move a sequence past ``max(id)`` (finding ``sequence-behind``)."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from noclash.doctor.catalog import Sequence
from noclash.doctor.context import Context
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action
from noclash.doctor.repairs.backup import Backup
from noclash.doctor.repairs.locks import describe

ID = "reset-sequence"


def plan(ctx: Context, finding: Finding) -> Action | None:
    seq: Sequence = finding.details["sequence"]
    q = ctx.q(seq.column)
    stmt = f"SELECT setval('{seq.name}', (SELECT max({q}) FROM {ctx.t(seq.table)}))"

    def apply(ctx: Context, backup: Backup, _progress: Callable[[str], None]) -> list[str]:
        top = ctx.conn.execute(sa.text(f"SELECT max({q}) FROM {ctx.t(seq.table)}")).scalar()
        current = next(s for s in ctx.catalog.sequences if s.name == seq.name)
        if top is None or current.next_value > int(top):
            return []
        backup.save(
            ctx.conn,
            ID,
            seq.table,
            [{"sequence": seq.name, "last_value": current.last_value, "max": int(top)}],
        )
        ctx.conn.execute(
            sa.text("SELECT setval(CAST(:s AS regclass), :v)"), {"s": seq.name, "v": int(top)}
        )
        return []

    return Action(
        repair=ID,
        check=finding.check,
        table=seq.table,
        columns=(seq.column,),
        summary=f"set sequence {seq.name} to max({seq.column}) = {finding.evidence['max']}",
        statements=[stmt],
        locks=describe(ctx, "sequence"),
        apply=apply,
    )
