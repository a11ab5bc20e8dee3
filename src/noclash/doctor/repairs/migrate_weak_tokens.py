"""Move weak tokens to a legacy column and give rows UUIDv4 (finding ``weak-tokens``).

Why not ``ALTER COLUMN ... TYPE uuid USING col::uuid`` (seeds 000/001): it fails on every
short token. Why not just regenerate: every embedded widget and published link carries the
old token. So the old value moves to ``<column>_legacy`` (indexed, unique when it was), the
column gets a UUIDv4 per row and, on PostgreSQL, a ``gen_random_uuid()`` default for new
rows. The application resolves a token by ``column = :t OR column_legacy = :t``; no new
value ever goes into the legacy column, so its collision risk stops growing.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from noclash.doctor.context import Context
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action, add_unique_index, batches, row_key, select_rows
from noclash.doctor.repairs.backup import Backup
from noclash.doctor.repairs.locks import describe
from noclash.unique.ids import uuid4

ID = "migrate-weak-tokens"


def plan(ctx: Context, finding: Finding) -> Action | None:
    tname, (cname,) = finding.table or "", finding.columns
    table = ctx.catalog.tables[tname]
    legacy = f"{cname}_legacy"
    q, ql, t = ctx.q(cname), ctx.q(legacy), ctx.t(tname)
    was_unique = table.has_unique_on((cname,))
    ix_name = ctx.q(f"{tname.rsplit('.', 1)[-1]}_{legacy}_key"[:63])
    kind = "UNIQUE INDEX" if was_unique else "INDEX"
    conc = " CONCURRENTLY" if ctx.dialect.supports_concurrent_index else ""
    index = f"CREATE {kind}{conc} IF NOT EXISTS {ix_name} ON {t} ({ql})"
    weak = f"{q} IS NOT NULL AND NOT {ctx.dialect.uuid_shaped(q)}"
    default = ctx.dialect.uuid_default_sql(ctx.conn, table, cname)
    # Fresh UUIDv4 values are unique: say so with an index if the column had none.
    main_index = [] if was_unique else add_unique_index.statements(ctx, tname, (cname,))
    stmts = [
        *([] if legacy in table.columns else [f"ALTER TABLE {t} ADD COLUMN {ql} TEXT"]),
        f"UPDATE {t} SET {ql} = {q}, {q} = <uuid4> "
        f"WHERE {q} IS NOT NULL AND NOT {ctx.dialect.uuid_shaped_sql(q)}",
        *default,
        index,
        *main_index,
    ]

    def apply(ctx: Context, backup: Backup, progress: Callable[[str], None]) -> list[str]:
        key = row_key(ctx, tname)
        if legacy not in ctx.catalog.tables[tname].columns:
            ctx.conn.exec_driver_sql(f"ALTER TABLE {t} ADD COLUMN {ql} TEXT")
        rows = select_rows(ctx, tname, weak)
        backup.save(ctx.conn, ID, tname, rows)
        update = sa.text(f"UPDATE {t} SET {ql} = :old, {q} = :new WHERE {key} = :k")
        for n, chunk in enumerate(batches(rows), 1):
            progress(f"{ID} {tname}.{cname}: batch {n}")
            ctx.conn.execute(
                update,
                [{"old": r[cname], "new": str(uuid4()), "k": r["noclash_key"]} for r in chunk],
            )
        for s in default:
            ctx.conn.exec_driver_sql(s)
        return add_unique_index.build(ctx, [index, *main_index])

    return Action(
        repair=ID,
        check=finding.check,
        table=tname,
        columns=(cname,),
        summary=(
            f"keep {tname}.{cname}'s {finding.evidence['rows']} weak tokens resolving in "
            f"{legacy} and give every row (and new rows) a UUIDv4 {cname}"
        ),
        statements=stmts,
        locks=describe(ctx, "alter", "update", "concurrent"),
        apply=apply,
    )
