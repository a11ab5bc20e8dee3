"""Duplicate indexes, and plain indexes that are a prefix of another.

Every index slows every write and holds locks during builds. ``(a)`` is redundant next to
``(a, b)``; two indexes on the same keys are one too many. Unique, primary and
constraint-backing indexes are never proposed for dropping.

Precision: an index is redundant only when another serves every query it serves: the same
method, the same partial predicate, and each of its key parts equal to the other's
(column or expression, operator class, collation, order); for a prefix, both B-trees. Its
INCLUDE columns must be in the other too. So Django's ``*_like`` indexes
(``varchar_pattern_ops``, which serve ``LIKE 'abc%'``) are never redundant next to the
unique index on the same column, nor is a ``lower(email)`` index next to ``(email)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from noclash.doctor.catalog import Index
from noclash.doctor.context import Context
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "redundant-indexes"
TITLE = "Duplicate or prefix-redundant indexes"
HELP = "Drop the redundant index (`DROP INDEX CONCURRENTLY`); the other serves its queries."
LINKS = (
    ("Multicolumn indexes", "https://www.postgresql.org/docs/current/indexes-multicolumn.html"),
    ("Operator classes", "https://www.postgresql.org/docs/current/indexes-opclass.html"),
    (
        "Index-only scans and INCLUDE",
        "https://www.postgresql.org/docs/current/indexes-index-only-scans.html",
    ),
)


@dataclass(frozen=True)
class RedundantIndexesEvidence(Evidence):
    covered_by: str
    index: str
    kind: str


def _droppable(ix: Index) -> bool:
    return not (ix.unique or ix.primary or ix.constraint or ix.rowid)


def _normal(predicate: str | None) -> str:
    return " ".join((predicate or "").replace("(", " ( ").replace(")", " ) ").lower().split())


def covers(other: Index, ix: Index) -> str | None:
    """ "duplicate" or "prefix" when ``other`` serves every query ``ix`` serves."""
    if other.method != ix.method or _normal(other.predicate) != _normal(ix.predicate):
        return None
    mine, theirs = ix.key_parts, other.key_parts
    if theirs[: len(mine)] != mine:
        return None
    if not set(ix.include) <= {k.column for k in theirs} | set(other.include):
        return None
    if len(theirs) == len(mine):
        return "duplicate"
    return "prefix" if ix.method == "btree" else None


def redundant(indexes: list[Index]) -> Iterator[tuple[Index, Index, str]]:
    """(redundant index, the index that covers it, "duplicate" | "prefix")."""
    usable = sorted((ix for ix in indexes if ix.valid and not ix.rowid), key=lambda i: i.name)
    for ix in usable:
        if not _droppable(ix):
            continue
        for other in usable:
            if other is ix:
                continue
            kind = covers(other, ix)
            if kind == "duplicate" and _droppable(other) and other.name > ix.name:
                continue  # of two droppable duplicates, the later name is the one to drop
            if kind:
                yield ix, other, kind
                break


def run(ctx: Context) -> Iterator[Finding]:
    for tname, table in ctx.catalog.tables.items():
        for ix, other, kind in redundant(table.indexes):
            how = "has the same keys as" if kind == "duplicate" else "is a prefix of"
            yield Finding(
                check=ID,
                severity=Severity.WARNING,
                table=tname,
                columns=ix.column_names,
                message=f"index {ix.name} {how} {other.name}: it costs writes and serves no query",
                evidence=RedundantIndexesEvidence(covered_by=other.name, index=ix.name, kind=kind),
                fix=Fix(
                    statements=(
                        f"DROP INDEX{ctx.dialect.concurrently()} {ctx.ix(tname, ix.name)}",
                    ),
                    idiom=ctx.idiom(),
                ),
            )


__all__ = ["HELP", "ID", "TITLE", "RedundantIndexesEvidence", "run"]
