"""Suffix colliding slugs, then build the unique index (finding ``duplicate-keys``, seed 004).

Policy: in each group the oldest row (smallest key) keeps its slug; the others get
``-2``, ``-3``, ... skipping any value already taken, so no existing link changes meaning
and no row is deleted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import sqlalchemy as sa

from noclash.doctor.context import Context
from noclash.doctor.errors import RepairFailed
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action, add_unique_index, batches, row_key
from noclash.doctor.repairs.backup import Backup
from noclash.doctor.repairs.locks import describe

ID = "suffix-duplicates"


def plan(ctx: Context, finding: Finding) -> Action | None:
    tname, (cname,) = finding.table or "", finding.columns
    q = ctx.q(cname)
    index = add_unique_index.statements(ctx, tname, (cname,))
    stmts = [
        f"UPDATE {ctx.t(tname)} SET {q} = {q} || '-<n>' "
        f"-- every row of a duplicate group but the oldest",
        *index,
    ]

    def apply(ctx: Context, backup: Backup, progress: Callable[[str], None]) -> list[str]:
        key = row_key(ctx, tname)
        t = ctx.t(tname)
        dup_rows = (
            ctx.conn.execute(
                sa.text(
                    f"SELECT {key} AS noclash_key, * FROM {t} WHERE {q} IN "
                    f"(SELECT {q} FROM {t} GROUP BY {q} HAVING count(*) > 1) ORDER BY {q}, {key}"
                )
            )
            .mappings()
            .all()
        )
        taken = set(
            ctx.conn.execute(sa.text(f"SELECT {q} FROM {t} WHERE {q} IS NOT NULL")).scalars()
        )
        groups: dict[str, list] = defaultdict(list)
        for r in dup_rows:
            groups[r[cname]].append(r)
        changes: list[dict] = []
        backups: list[dict] = []
        for value, members in groups.items():
            n = 2
            for r in members[1:]:
                while f"{value}-{n}" in taken:
                    n += 1
                new = f"{value}-{n}"
                taken.add(new)
                changes.append({"v": new, "k": r["noclash_key"]})
                backups.append(dict(r))
        backup.save(ctx.conn, ID, tname, backups)
        update = sa.text(f"UPDATE {t} SET {q} = :v WHERE {key} = :k")
        for n, chunk in enumerate(batches(changes), 1):
            progress(f"{ID} {tname}.{cname}: batch {n}")
            ctx.conn.execute(update, chunk)
        left = ctx.conn.execute(
            sa.text(
                f"SELECT count(*) FROM (SELECT {q} FROM {t} GROUP BY {q} HAVING count(*) > 1) AS g"
            )
        ).scalar()
        if left:
            raise RepairFailed("duplicates remain after suffixing", action=ID, table=tname)
        return add_unique_index.build(ctx, index)

    return Action(
        repair=ID,
        check=finding.check,
        table=tname,
        columns=(cname,),
        summary=(
            f"suffix {finding.evidence['rows'] - finding.evidence['groups']} duplicate "
            f"{cname} values of {tname} (oldest row keeps its value), then make it unique"
        ),
        statements=stmts,
        locks=describe(ctx, "update", "concurrent", "constraint"),
        apply=apply,
    )
