"""NULL or empty values in a column the application treats as a required unique key.

Seed 003: ``sessionId`` had a unique index but the code sometimes wrote NULL; the second
NULL failed with E11000. In SQL the same bug hides behind ``NULLS DISTINCT`` (rows pile up
without a key) or surfaces under ``UNIQUE NULLS NOT DISTINCT`` (the second NULL is refused).
"""

from __future__ import annotations

from collections.abc import Iterator

from noclash.doctor.catalog import Table
from noclash.doctor.context import Context
from noclash.doctor.intent import is_legacy, looks_like_key, snake
from noclash.doctor.model import Finding, Fix, Severity

ID = "null-keys"
TITLE = "Required unique keys that are NULL or empty"
HELP = (
    "Backfill every missing key with a UUIDv4, then make the column NOT NULL: "
    "`noclash repair` does both, and the application must always set the key."
)
LINKS = (
    (
        "UNIQUE NULLS NOT DISTINCT",
        "https://www.postgresql.org/docs/current/ddl-constraints.html#DDL-CONSTRAINTS-UNIQUE-CONSTRAINTS",
    ),
    ("repair: backfill-keys", "repair.md#backfill-keys"),
)
# Fixture (noclash.doctor.fixtures) whose report is shown on the docs page.
EXAMPLE = "null-session-ids"


def candidates(ctx: Context) -> list[tuple[str, str, str]]:
    """(table, column, why) for named keys, explicit keys and NULLS NOT DISTINCT columns."""
    out: dict[tuple[str, str], str] = {}
    for spec in ctx.options.keys:
        if spec.table in ctx.catalog.tables and len(spec.columns) == 1:
            out.setdefault((spec.table, spec.columns[0]), "--key")
    for tname, table in ctx.catalog.tables.items():
        for ix in table.unique_indexes():
            if ix.nulls_not_distinct:
                for c in ix.column_names:
                    out.setdefault((tname, c), f"UNIQUE NULLS NOT DISTINCT index {ix.name}")
        for col in table.columns.values():
            if looks_like_key(col) and "slug" not in snake(col.name):
                out.setdefault((tname, col.name), "name")
    return [(t, c, why) for (t, c), why in out.items()]


def _why(why: str) -> str:
    return "named like one" if why == "name" else why


def _repairable(table: Table, column: str) -> bool:
    col = table.columns[column]
    return (col.is_uuid or col.is_text) and not is_legacy(column)


def run(ctx: Context) -> Iterator[Finding]:
    for tname, cname, why in candidates(ctx):
        table = ctx.catalog.tables[tname]
        col = table.columns.get(cname)
        if col is None:
            continue
        q = ctx.q(cname)
        empty = f" OR {q} = ''" if col.is_text else ""
        missing = f"{q} IS NULL{empty}"
        nulls = int(
            ctx.scalar(f"SELECT count(*) FROM {ctx.t(tname)} WHERE {q} IS NULL", what=tname)
        )
        empties = (
            int(ctx.scalar(f"SELECT count(*) FROM {ctx.t(tname)} WHERE {q} = ''", what=tname))
            if col.is_text
            else 0
        )
        if not nulls and not empties:
            continue
        yield Finding(
            check=ID,
            severity=Severity.ERROR,
            table=tname,
            columns=(cname,),
            message=(
                f"{nulls + empties} rows of {tname} have no {cname} ({nulls} NULL, "
                f"{empties} empty) although it is a unique key ({_why(why)}): lookups by key miss "
                f"them and the next missing value can fail with a duplicate key"
            ),
            evidence={
                "empty": empties,
                "ids": ctx.sample_ids(tname, missing),
                "intent": why,
                "null": nulls,
                "rows": ctx.row_count(tname),
            },
            fix=Fix(
                sql=(
                    f"UPDATE {ctx.t(tname)} SET {q} = <new uuid> WHERE {missing}; "
                    + (
                        f"ALTER TABLE {ctx.t(tname)} ALTER COLUMN {q} SET NOT NULL;"
                        if ctx.dialect.supports_alter_not_null
                        else "-- then refuse NULL with triggers (no ALTER ... SET NOT NULL)"
                    )
                ),
                repair="backfill-keys" if _repairable(table, cname) else None,
            ),
        )
