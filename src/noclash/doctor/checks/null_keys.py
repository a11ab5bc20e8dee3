"""Missing values in a unique key where missing values collide, or where the application
looks rows up by the key.

Seed 003: MongoDB's unique index counts ``null`` as a value, so the second document
without a ``sessionId`` failed with E11000. SQL is different, per engine:

- a plain unique column admits any number of NULLs (they are never equal): no collision
  hazard, no finding;
- ``UNIQUE NULLS NOT DISTINCT`` (PostgreSQL 15+) behaves like MongoDB: one NULL exists,
  the next insert without a value fails (error);
- the empty string is a value: with one ``''`` in a unique column, the next row written
  with ``''`` for "no value" fails (error);
- a key stated with ``--key`` is one the application looks rows up by: a row without a
  value cannot be found by it (error).

Precision: sure about the counts; the repair (`backfill-keys`) is planned only when the
column holds uuids (its type, or 95% of its values), so a fresh UUIDv4 is the same kind of
value, and never for secrets, URLs or free text. It backfills; it does not add NOT NULL
(the application may write NULL legitimately).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from noclash.doctor import fixes
from noclash.doctor.context import Context
from noclash.doctor.intent import is_legacy, never_a_key, stated_keys
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "null-keys"
TITLE = "Missing values that collide in a unique key"
HELP = (
    "Give every row a value (`noclash repair` backfills uuid keys with UUIDv4) and make the "
    "application always set one; or use NULL, never '', for \"no value\" in a unique column "
    "without NULLS NOT DISTINCT."
)
LINKS = (
    (
        "UNIQUE NULLS NOT DISTINCT",
        "https://www.postgresql.org/docs/current/ddl-constraints.html#DDL-CONSTRAINTS-UNIQUE-CONSTRAINTS",
    ),
    ("SQLite: NULLs in UNIQUE columns", "https://www.sqlite.org/nulls.html"),
    ("repair: backfill-keys", "repair.md#backfill-keys"),
)
# Fixture (noclash.doctor.fixtures) whose report is shown on the docs page.
EXAMPLE = "null-session-ids"
UUID_SHARE = 0.95


@dataclass(frozen=True)
class NullKeysEvidence(Evidence):
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"nulls_collide", "hyphens"})

    empty: int
    ids: list
    intent: str
    null: int
    rows: int
    nulls_collide: bool = False
    hyphens: bool = True


def candidates(ctx: Context) -> list[tuple[str, str, str, bool]]:
    """(table, column, why, whether NULL counts as missing) for single-column keys."""
    out: dict[tuple[str, str], tuple[str, bool]] = {}
    for spec in stated_keys(ctx.catalog, ctx.options.keys):
        if len(spec.columns) == 1:
            out[(spec.table, spec.columns[0])] = ("--key", True)
    for tname, table in ctx.catalog.tables.items():
        for col in table.columns.values():
            for ix in table.single_column_uniques(col.name):
                if ix.nulls_not_distinct:
                    out.setdefault(
                        (tname, col.name), (f"UNIQUE NULLS NOT DISTINCT index {ix.name}", True)
                    )
                elif col.is_text:
                    out.setdefault((tname, col.name), (f"unique index {ix.name}", False))
    return [(t, c, why, nulls) for (t, c), (why, nulls) in out.items()]


def _uuid_valued(ctx: Context, tname: str, cname: str, missing: str) -> tuple[bool, bool]:
    """(whether the column holds uuids, whether they are written with hyphens)."""
    col = ctx.catalog.tables[tname].columns[cname]
    if col.is_uuid:
        return True, True
    q = ctx.q(cname)
    total, shaped, hyphens = ctx.rows(
        f"SELECT count(*), coalesce(sum(CASE WHEN {ctx.dialect.uuid_shaped(q)} THEN 1 ELSE 0 "
        f"END), 0), coalesce(sum(CASE WHEN {q} LIKE '%-%' THEN 1 ELSE 0 END), 0) "
        f"FROM {ctx.t(tname)} WHERE NOT ({missing}) AND {q} IS NOT NULL",
        what=tname,
    )[0]
    return bool(total) and shaped >= UUID_SHARE * total, not total or hyphens * 2 >= total


def run(ctx: Context) -> Iterator[Finding]:
    for tname, cname, why, nulls_collide in candidates(ctx):
        table = ctx.catalog.tables[tname]
        col = table.columns[cname]
        q = ctx.q(cname)
        nulls = (
            int(ctx.scalar(f"SELECT count(*) FROM {ctx.t(tname)} WHERE {q} IS NULL", what=tname))
            if nulls_collide
            else 0
        )
        empties = (
            int(ctx.scalar(f"SELECT count(*) FROM {ctx.t(tname)} WHERE {q} = ''", what=tname))
            if col.is_text
            else 0
        )
        if not nulls and not empties:
            continue
        missing = fixes.missing_values(ctx, tname, cname, nulls=nulls_collide)
        uuids, hyphens = _uuid_valued(ctx, tname, cname, missing)
        certain = uuids and never_a_key(col) is None and not is_legacy(cname)
        if certain:
            steps = fixes.statements(fixes.backfill(ctx, tname, cname, missing, hyphens=hyphens))
        else:
            pk = ", ".join(ctx.pk_expr(tname))
            steps = (f"SELECT {pk} FROM {ctx.t(tname)} WHERE {missing}",)
        hazard = (
            "lookups by the key cannot find them"
            if why == "--key"
            else "the next row written without a value fails with a duplicate key"
        )
        parts = [f"{nulls} NULL"] if nulls_collide else []
        if col.is_text:
            parts.append(f"{empties} empty")
        yield Finding(
            check=ID,
            severity=Severity.ERROR,
            table=tname,
            columns=(cname,),
            message=(
                f"{nulls + empties} rows of {tname} have no {cname} ({', '.join(parts)}) "
                f"although it is a unique key ({why}): {hazard}"
            ),
            evidence=NullKeysEvidence(
                empty=empties,
                ids=ctx.sample_ids(tname, missing),
                intent=why,
                null=nulls,
                rows=ctx.row_count(tname),
                nulls_collide=nulls_collide,
                hyphens=hyphens,
            ),
            fix=Fix(
                statements=steps,
                repair="backfill-keys" if certain else None,
                idiom=ctx.idiom(),
            ),
        )


__all__ = ["HELP", "ID", "TITLE", "NullKeysEvidence", "run"]
