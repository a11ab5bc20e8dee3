"""Rows that share a value of a key the application wants unique, so the index cannot exist.

Seed 004: the unique index on ``conversations.slug`` was dropped (or never built) and
colliding slugs piled up; ``CREATE UNIQUE INDEX`` now fails until they are resolved.
"""

from __future__ import annotations

from collections.abc import Iterator

from noclash.doctor.checks.lifecycle_unique import active_predicate, key_lifecycle
from noclash.doctor.context import Context, plain
from noclash.doctor.intent import intended_keys, snake
from noclash.doctor.model import Finding, Fix, Severity

ID = "duplicate-keys"
TITLE = "Duplicate values block a unique index"
HELP = (
    "Resolve the duplicate groups (for slugs, `noclash repair` suffixes all but the oldest), "
    "then build the unique index."
)
LINKS = (
    ("Seed 004: slug collisions", "../../README.md"),
    ("CREATE INDEX", "https://www.postgresql.org/docs/current/sql-createindex.html"),
    ("repair: suffix-duplicates", "repair.md#suffix-duplicates"),
)
# Fixture (noclash.doctor.fixtures) whose report is shown on the docs page.
EXAMPLE = "colliding-slugs"


def run(ctx: Context) -> Iterator[Finding]:
    for spec in intended_keys(ctx.catalog, ctx.options.keys):
        table = ctx.catalog.table(spec.table)
        if table is None or not set(spec.columns) <= set(table.columns):
            continue
        life = key_lifecycle(ctx, spec.table, spec.columns)
        if table.has_unique_on(spec.columns, whole_table=life is None):
            continue
        active = active_predicate(ctx, life) if life else None
        dups = ctx.duplicate_groups(spec.table, spec.columns, active)
        if not dups["groups"]:
            continue
        key_sql = ", ".join(ctx.q(c) for c in spec.columns)
        samples = []
        for row in dups["top"]:
            values = row[: len(spec.columns)]
            where = " AND ".join(f"{ctx.q(c)} = :v{i}" for i, c in enumerate(spec.columns))
            if active:
                where = f"{where} AND {active}"
            params = {f"v{i}": v for i, v in enumerate(values)}
            samples.append(
                {
                    "count": int(row[-1]),
                    "ids": ctx.sample_ids(spec.table, where, params),
                    "key": [plain(v) for v in values],
                }
            )
        slug = len(spec.columns) == 1 and "slug" in snake(spec.columns[0])
        cols = ", ".join(spec.columns)
        repair = "partial-unique" if life else "suffix-duplicates" if slug else None
        scope = f" {'/'.join(life.active)}" if life else ""
        filter_sql = f" WHERE {active}" if active else ""
        yield Finding(
            check=ID,
            severity=Severity.ERROR,
            table=spec.table,
            columns=spec.columns,
            message=(
                f"{dups['rows']}{scope} rows of {spec.table} share {dups['groups']} values of "
                f"({cols}), so a unique index on it cannot be built and inserts of these "
                f"values are not refused"
            ),
            evidence={
                "groups": dups["groups"],
                "intent": spec.reason,
                "rows": dups["rows"],
                "samples": samples,
                "scope": list(life.active) if life else None,
            },
            fix=Fix(
                sql=(
                    f"SELECT {key_sql}, count(*) FROM {ctx.t(spec.table)}{filter_sql} "
                    f"GROUP BY {key_sql} HAVING count(*) > 1;"
                ),
                repair=repair,
            ),
            details={"index": None, "lifecycle": life},
        )


__all__ = ["HELP", "ID", "TITLE", "run"]
