"""Sequences (serial, identity) whose next value is already taken by a row.

After a bulk import with explicit ids, ``nextval`` hands out ids that exist: every insert
fails with "duplicate key value violates unique constraint ..._pkey" until it passes them.
"""

from __future__ import annotations

from collections.abc import Iterator

from noclash.doctor.catalog import Sequence
from noclash.doctor.context import Context
from noclash.doctor.model import Finding, Fix, Severity

ID = "sequence-behind"
TITLE = "Sequence behind max(id)"
HELP = "Move the sequence past the largest id: `SELECT setval(seq, max(id))` (`noclash repair`)."
LINKS = (
    (
        "Sequence functions (setval)",
        "https://www.postgresql.org/docs/current/functions-sequence.html",
    ),
    ("repair: reset-sequence", "repair.md#reset-sequence"),
)


def behind(ctx: Context) -> Iterator[tuple[Sequence, int]]:
    """(sequence, max value) pairs where the next value is not above the column's max."""
    if not ctx.dialect.has_sequences:
        return
    for seq in ctx.catalog.sequences:
        if seq.increment < 0:
            continue
        q = ctx.q(seq.column)
        top = ctx.scalar(f"SELECT max({q}) FROM {ctx.t(seq.table)}", what=seq.table)
        if top is not None and seq.next_value <= int(top):
            yield seq, int(top)


def run(ctx: Context) -> Iterator[Finding]:
    for name, table, column in ctx.catalog.unreadable_sequences:
        yield Finding(
            check=ID,
            severity=Severity.NOTE,
            table=table,
            columns=(column,),
            message=f"cannot tell whether sequence {name} is behind: no SELECT privilege on it",
            evidence={"sequence": name},
            fix=Fix(sql=f"GRANT SELECT ON SEQUENCE {name} TO <doctor role>;"),
        )
    for seq, top in behind(ctx):
        q = ctx.q(seq.column)
        yield Finding(
            check=ID,
            severity=Severity.ERROR,
            table=seq.table,
            columns=(seq.column,),
            message=(
                f"sequence {seq.name} will hand out {seq.next_value} but "
                f"{seq.table}.{seq.column} already reaches {top}: the next inserts fail "
                f"with a duplicate key"
            ),
            evidence={
                "max": top,
                "next_value": seq.next_value,
                "sequence": seq.name,
            },
            fix=Fix(
                sql=(f"SELECT setval('{seq.name}', (SELECT max({q}) FROM {ctx.t(seq.table)}));"),
                repair="reset-sequence",
            ),
            details={"sequence": seq},
        )
