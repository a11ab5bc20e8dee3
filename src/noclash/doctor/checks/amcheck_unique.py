"""Unique B-tree indexes that hold duplicates (PostgreSQL 17+, ``amcheck`` installed).

Corruption, a collation change under an index (glibc 2.28) or a bug can leave two equal
keys in a unique index; inserts keep failing or succeeding at random. ``bt_index_check``
with ``checkunique`` proves it. Skipped when the extension is not installed: the doctor
never creates extensions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from noclash.doctor.connect import first_line
from noclash.doctor.context import Context
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "amcheck-unique"
TITLE = "Unique indexes that hold duplicates (amcheck)"
HELP = (
    "Find and resolve the duplicate rows, then `REINDEX INDEX CONCURRENTLY`; check the "
    "collation version (`ALTER DATABASE ... REFRESH COLLATION VERSION`)."
)
LINKS = (("amcheck", "https://www.postgresql.org/docs/current/amcheck.html"),)
MIN_VERSION = (17,)


@dataclass(frozen=True)
class AmcheckEvidence(Evidence):
    amcheck: str
    index: str


def available(ctx: Context) -> bool:
    if not ctx.dialect.supports_amcheck or ctx.catalog.server_version < MIN_VERSION:
        return False
    return bool(
        ctx.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'", what="catalog")
    )


def run(ctx: Context) -> Iterator[Finding]:
    if not available(ctx):
        return
    for tname, table in ctx.catalog.tables.items():
        for ix in table.unique_indexes():
            if ix.method != "btree" or not ix.valid or ix.rowid:
                continue
            ctx.step(f"amcheck {ix.name}")
            savepoint = ctx.conn.begin_nested()
            try:
                ctx.conn.execute(
                    sa.text("SELECT bt_index_check(CAST(:i AS regclass), false, true)"),
                    {"i": ctx.ix(tname, ix.name)},
                )
                savepoint.commit()
            except sa.exc.DBAPIError as exc:
                savepoint.rollback()
                detail = first_line(exc)
                yield Finding(
                    check=ID,
                    severity=Severity.ERROR,
                    table=tname,
                    columns=ix.column_names,
                    message=f"amcheck: unique index {ix.name} on {tname} is broken: {detail}",
                    evidence=AmcheckEvidence(amcheck=detail, index=ix.name),
                    fix=Fix(statements=(f"REINDEX INDEX CONCURRENTLY {ctx.ix(tname, ix.name)}",)),
                )
