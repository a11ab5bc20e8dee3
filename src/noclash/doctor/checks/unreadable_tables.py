"""Tables the doctor's role may not read, skipped by every other check.

A role without ``SELECT`` on a table (or without ``USAGE`` on its schema) used to end the
whole run at that table with "cannot read ... permission denied" (exit code 2), so one
locked-down table hid everything the others hold. Such tables are now left out of the run,
like sequences the role may not read (see `sequence-behind`): no check reads them and
`noclash repair` plans nothing on them. Each is reported as a note, so a clean report
says which tables it does not cover.

SQLite has no privileges, but a virtual table whose module or tokenizer this SQLite build
lacks (Signal Desktop's ``fts5(body, tokenize = 'signal_tokenizer')``, sqlite-vec's
``vec0``, SpatiaLite's) cannot even be described: ``PRAGMA table_info`` fails with "no such
tokenizer" / "no such module", and that ended the run with exit code 2 "cannot read the
catalog". Such a table is skipped and reported here the same way (a virtual table has no
index or constraint for a repair to change anyway).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from noclash.doctor.context import Context
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "unreadable-tables"
TITLE = "Tables the role cannot read"
HELP = (
    "Run the doctor as a role that may read every table (the owner, or one granted "
    "`SELECT` on the table and `USAGE` on its schema), or accept that these tables are "
    "not inspected. On SQLite, inspect a copy with an SQLite that loads the virtual table's "
    "module (the application's own build), or accept the same."
)
LINKS = (
    ("GRANT", "https://www.postgresql.org/docs/current/sql-grant.html"),
    ("has_table_privilege", "https://www.postgresql.org/docs/current/functions-info.html"),
)


@dataclass(frozen=True)
class UnreadableTablesEvidence(Evidence):
    missing: list[str]


def run(ctx: Context) -> Iterator[Finding]:
    for table in ctx.catalog.unreadable_tables:
        why = table.reason or (
            f"role {ctx.catalog.role} may not read it (no {' and no '.join(table.missing)})"
        )
        yield Finding(
            check=ID,
            severity=Severity.NOTE,
            table=table.name,
            message=f"{table.name} was not inspected: {why}",
            evidence=UnreadableTablesEvidence(missing=list(table.missing)),
            fix=Fix(statements=table.grants),
        )


__all__ = ["HELP", "ID", "TITLE", "UnreadableTablesEvidence", "run"]
