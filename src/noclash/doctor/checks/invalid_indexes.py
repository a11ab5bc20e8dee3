"""Indexes left invalid or not ready by a failed ``CREATE INDEX CONCURRENTLY``.

A concurrent build that fails (often on a duplicate, for a unique index) leaves the index
behind, marked invalid: the planner ignores it, but once it is ready every write still
maintains it and, if it is unique, is still refused on a duplicate. Builds in progress
(``pg_stat_progress_create_index``) are not reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from noclash.doctor import fixes
from noclash.doctor.context import Context
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "invalid-indexes"
TITLE = "Invalid or not-ready indexes"
HELP = (
    "Fix what made the build fail (duplicates, for a unique index), then "
    "`DROP INDEX CONCURRENTLY` and build it again, or `REINDEX INDEX CONCURRENTLY`."
)
LINKS = (
    (
        "Building indexes concurrently",
        "https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY",
    ),
    ("pg_index", "https://www.postgresql.org/docs/current/catalog-pg-index.html"),
)


@dataclass(frozen=True)
class InvalidIndexesEvidence(Evidence):
    duplicate_groups: int | None
    index: str
    ready: bool
    valid: bool


def run(ctx: Context) -> Iterator[Finding]:
    for tname, table in ctx.catalog.tables.items():
        for ix in table.indexes:
            if (ix.valid and ix.ready) or ix.building:
                continue
            state = "not ready" if not ix.ready else "invalid"
            enforces = ix.unique and ix.ready
            note = ""
            groups = None
            if ix.unique and not ix.has_expressions:
                groups = ctx.duplicate_groups(tname, ix.column_names).groups
                if groups:
                    note = f"; {groups} duplicate groups must be resolved first"
            if enforces:
                note += "; it is unused by queries but still refuses duplicates on writes"
            yield Finding(
                check=ID,
                severity=Severity.ERROR,
                table=tname,
                columns=ix.column_names,
                message=f"index {ix.name} on {tname} is {state} (failed concurrent build){note}",
                evidence=InvalidIndexesEvidence(
                    duplicate_groups=groups, index=ix.name, ready=ix.ready, valid=ix.valid
                ),
                fix=Fix(
                    statements=_fix(ctx, tname, ix.column_names, ix.name, ix.definition, groups)
                ),
            )


def _fix(
    ctx: Context,
    table: str,
    columns: tuple[str, ...],
    name: str,
    definition: str,
    groups: int | None,
) -> tuple[str, ...]:
    """Rebuild the index; with duplicates, list them first (a rebuild would fail again)."""
    if groups:
        return (fixes.duplicate_groups_sql(ctx, table, columns),)
    if definition:
        return (f"DROP INDEX CONCURRENTLY {ctx.ix(table, name)}", definition)
    return (f"REINDEX INDEX CONCURRENTLY {ctx.ix(table, name)}",)
