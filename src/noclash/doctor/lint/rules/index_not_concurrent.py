"""``CREATE INDEX`` without ``CONCURRENTLY`` on an existing table blocks writes.

A plain build holds a SHARE lock: every INSERT, UPDATE and DELETE on the table waits
until it finishes. Tables created in the same file are exempt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from noclash.doctor.model import Finding, Fix, Severity

if TYPE_CHECKING:
    from noclash.doctor.lint import State, Statement

ID = "index-not-concurrent"
TITLE = "Index built without CONCURRENTLY"
HELP = "Use CREATE [UNIQUE] INDEX CONCURRENTLY, outside a transaction block."
LINKS = (
    (
        "CREATE INDEX CONCURRENTLY",
        "https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY",
    ),
)
_CREATE = re.compile(r"^CREATE (UNIQUE )?INDEX (?!CONCURRENTLY\b).*? ON (?:ONLY )?(\S+)")


def check(stmt: Statement, state: State) -> Iterator[Finding]:
    from noclash.doctor.lint import table_name

    m = _CREATE.match(stmt.normal)
    if not m:
        return
    table = table_name(m.group(2))
    if table in state.created_tables:
        return
    yield Finding(
        check=ID,
        severity=Severity.ERROR,
        file=stmt.file,
        line=stmt.line,
        table=table,
        message=(
            f"CREATE {m.group(1) or ''}INDEX on {table} without CONCURRENTLY blocks every "
            f"write to {table} until the build ends"
        ),
        fix=Fix(statements=(HELP.rstrip(";"),)),
    )
