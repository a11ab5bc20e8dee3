"""Sequences whose next value is already taken by a row.

After a bulk import with explicit ids, ``nextval`` hands out ids that exist: every insert
fails with "duplicate key value violates unique constraint ..._pkey" until it passes them.
Every sequence a column draws from counts: owned ones (serial, identity) and those a
column default names without owning them (pg_dump's ``DEFAULT nextval('t_id_seq')``, as
in the pagila sample database); one sequence feeding several columns must pass them all.

Precision: sure. The next value is read from the sequence itself (``last_value`` and
``is_called``) and compared with ``max()`` of every column it feeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from noclash.doctor import fixes
from noclash.doctor.catalog import Sequence
from noclash.doctor.context import Context
from noclash.doctor.model import Evidence, Finding, Fix, Severity

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


@dataclass(frozen=True)
class SequenceBehindEvidence(Evidence):
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"sequence_object"})

    max: int | None
    next_value: int | None
    owned: bool | None
    sequence: str
    sequence_object: Sequence | None = None


def behind(ctx: Context) -> Iterator[tuple[Sequence, int]]:
    """(sequence, max value) pairs where the next value is not above the columns' max."""
    if not ctx.dialect.has_sequences:
        return
    for seq in ctx.catalog.sequences:
        if seq.increment < 0:
            continue
        tops = [ctx.scalar(f"SELECT max({ctx.q(c)}) FROM {ctx.t(t)}", what=t) for t, c in seq.users]
        values = [int(v) for v in tops if v is not None]
        if values and seq.next_value <= max(values):
            yield seq, max(values)


def run(ctx: Context) -> Iterator[Finding]:
    for name, table, column in ctx.catalog.unreadable_sequences:
        yield Finding(
            check=ID,
            severity=Severity.NOTE,
            table=table,
            columns=(column,),
            message=f"cannot tell whether sequence {name} is behind: no SELECT privilege on it",
            evidence=SequenceBehindEvidence(max=None, next_value=None, owned=None, sequence=name),
            fix=Fix(
                statements=(
                    ctx.dialect.grant_select_sql(
                        name, ctx.q(ctx.catalog.role) if ctx.catalog.role else None
                    ),
                )
            ),
        )
    for seq, top in behind(ctx):
        users = ", ".join(f"{t}.{c}" for t, c in seq.users)
        yield Finding(
            check=ID,
            severity=Severity.ERROR,
            table=seq.table,
            columns=(seq.column,),
            message=(
                f"sequence {seq.name} will hand out {seq.next_value} but {users} already "
                f"reaches {top}: the next inserts fail with a duplicate key"
            ),
            evidence=SequenceBehindEvidence(
                max=top,
                next_value=seq.next_value,
                owned=seq.owned,
                sequence=seq.name,
                sequence_object=seq,
            ),
            fix=Fix(
                statements=fixes.statements(fixes.reset_sequence(ctx, seq)),
                repair="reset-sequence",
                idiom=ctx.idiom(),
            ),
        )


__all__ = ["HELP", "ID", "TITLE", "SequenceBehindEvidence", "run"]
