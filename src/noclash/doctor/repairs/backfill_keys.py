"""Give every row a key, then forbid missing keys (finding ``null-keys``, seed 003).

Missing means NULL or the empty string. Each gets a fresh UUIDv4, spelled like the
column's existing values (with or without hyphens); then the column becomes NOT NULL
(PostgreSQL) or gains triggers that refuse NULL and '' (SQLite cannot add NOT NULL without
rebuilding the table). A unique index is built if none covers the column.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from noclash.doctor.context import Context
from noclash.doctor.dialects import is_uuid_text
from noclash.doctor.errors import RepairFailed
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action, add_unique_index, batches, row_key, select_rows
from noclash.doctor.repairs.backup import Backup
from noclash.doctor.repairs.locks import describe
from noclash.unique.ids import uuid4

ID = "backfill-keys"


def plan(ctx: Context, finding: Finding) -> Action | None:
    tname, (cname,) = finding.table or "", finding.columns
    table = ctx.catalog.tables[tname]
    col = table.columns[cname]
    q = ctx.q(cname)
    missing = f"{q} IS NULL OR {q} = ''" if col.is_text else f"{q} IS NULL"
    guard = ctx.dialect.not_null_guard_sql(ctx.conn, table, cname)
    index = (
        [] if table.covered_by_unique(cname) else add_unique_index.statements(ctx, tname, (cname,))
    )
    stmts = [f"UPDATE {ctx.t(tname)} SET {q} = <uuid4> WHERE {missing}", *guard, *index]

    def apply(ctx: Context, backup: Backup, progress: Callable[[str], None]) -> list[str]:
        key = row_key(ctx, tname)
        rows = select_rows(ctx, tname, missing)
        backup.save(ctx.conn, ID, tname, rows)
        sample = (
            ctx.conn.execute(
                sa.text(f"SELECT {q} FROM {ctx.t(tname)} WHERE NOT ({missing}) LIMIT 50")
            )
            .scalars()
            .all()
        )
        hyphens = not sample or any("-" in str(v) for v in sample if is_uuid_text(str(v)))
        update = sa.text(f"UPDATE {ctx.t(tname)} SET {q} = :v WHERE {key} = :k")
        for n, chunk in enumerate(batches(rows), 1):
            progress(f"{ID} {tname}.{cname}: batch {n}")
            ctx.conn.execute(
                update,
                [
                    {"v": str(u) if hyphens else u.hex, "k": r["noclash_key"]}
                    for r, u in ((r, uuid4()) for r in chunk)
                ],
            )
        left = ctx.conn.execute(sa.text(f"SELECT count(*) FROM {ctx.t(tname)} WHERE {missing}"))
        if left.scalar():
            raise RepairFailed(
                "rows still missing a key after the backfill", action=ID, table=tname
            )
        for s in guard:
            ctx.conn.exec_driver_sql(s)
        return add_unique_index.build(ctx, index)

    return Action(
        repair=ID,
        check=finding.check,
        table=tname,
        columns=(cname,),
        summary=(
            f"give {finding.evidence.get('null', 0) + finding.evidence.get('empty', 0)} rows "
            f"of {tname} a UUIDv4 {cname}, then refuse missing values"
        ),
        statements=stmts,
        locks=describe(ctx, "update", "not_null"),
        apply=apply,
    )
