"""``CREATE INDEX`` without ``CONCURRENTLY`` on an existing table blocks writes.

A plain build holds a SHARE lock: every INSERT, UPDATE and DELETE on the table waits
until it finishes. Tables created in the same file are exempt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from noclash.doctor.lint.statements import IDENT, NAME, State, Statement, existing_table, finding
from noclash.doctor.model import Finding, Severity

ID = "index-not-concurrent"
TITLE = "Index built without CONCURRENTLY"
HELP = "Use CREATE [UNIQUE] INDEX CONCURRENTLY, outside a transaction block."
LINKS = (
    (
        "CREATE INDEX CONCURRENTLY",
        "https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY",
    ),
)
_CREATE = re.compile(
    rf"^CREATE (UNIQUE )?INDEX (?!CONCURRENTLY\b)(?:IF NOT EXISTS )?(?:{IDENT} )?"
    rf"ON (?:ONLY )?({NAME})"
)


def check(stmt: Statement, state: State) -> Iterator[Finding]:
    m = _CREATE.match(stmt.normal)
    if not m or (table := existing_table(m.group(2), state)) is None:
        return
    message = (
        f"CREATE {m.group(1) or ''}INDEX on {table} without CONCURRENTLY blocks every "
        f"write to {table} until the build ends"
    )
    yield finding(ID, HELP, stmt, Severity.ERROR, message, table=table)
