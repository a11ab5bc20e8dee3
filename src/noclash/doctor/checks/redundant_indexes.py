"""Duplicate indexes, and plain indexes that are a prefix of another.

Every index slows every write and holds locks during builds. ``(a)`` is redundant next to
``(a, b)``; two indexes on the same columns are one too many. Unique, partial and
constraint-backing indexes are never proposed for dropping.
"""

from __future__ import annotations

from collections.abc import Iterator

from noclash.doctor.catalog import Index
from noclash.doctor.context import Context
from noclash.doctor.model import Finding, Fix, Severity

ID = "redundant-indexes"
TITLE = "Duplicate or prefix-redundant indexes"
HELP = "Drop the redundant index (`DROP INDEX CONCURRENTLY`); the other serves its queries."
LINKS = (
    ("Multicolumn indexes", "https://www.postgresql.org/docs/current/indexes-multicolumn.html"),
)


def _droppable(ix: Index) -> bool:
    return not (ix.unique or ix.primary or ix.constraint or ix.predicate or ix.has_expressions)


def redundant(indexes: list[Index]) -> Iterator[tuple[Index, Index, str]]:
    """(redundant index, the index that covers it, "duplicate" | "prefix")."""
    usable = [ix for ix in indexes if ix.valid and not ix.has_expressions and not ix.predicate]
    for ix in sorted(usable, key=lambda i: i.name):
        if not _droppable(ix):
            continue
        for other in sorted(usable, key=lambda i: i.name):
            if other is ix or other.method != ix.method:
                continue
            same = other.column_names == ix.column_names
            prefix = other.column_names[: len(ix.column_names)] == ix.column_names
            if same and (not _droppable(other) or other.name < ix.name):
                yield ix, other, "duplicate"
                break
            if prefix and not same:
                yield ix, other, "prefix"
                break


def run(ctx: Context) -> Iterator[Finding]:
    for tname, table in ctx.catalog.tables.items():
        for ix, other, kind in redundant(table.indexes):
            how = "has the same columns as" if kind == "duplicate" else "is a prefix of"
            concurrently = " CONCURRENTLY" if ctx.dialect.supports_concurrent_index else ""
            yield Finding(
                check=ID,
                severity=Severity.WARNING,
                table=tname,
                columns=ix.column_names,
                message=f"index {ix.name} {how} {other.name}: it costs writes and serves no query",
                evidence={"covered_by": other.name, "index": ix.name, "kind": kind},
                fix=Fix(sql=f"DROP INDEX{concurrently} {ctx.ix(tname, ix.name)};"),
            )
