"""``CONCURRENTLY`` inside ``BEGIN ... COMMIT`` fails at once.

PostgreSQL refuses ``CREATE/DROP INDEX CONCURRENTLY`` and ``REINDEX CONCURRENTLY`` in a
transaction block ("cannot run inside a transaction block"); many migration tools wrap each
file in one, so the statement must go to a migration that opts out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from noclash.doctor.lint.statements import State, Statement, finding
from noclash.doctor.model import Finding, Severity

ID = "concurrently-in-transaction"
TITLE = "CONCURRENTLY inside a transaction"
HELP = "Move the statement out of BEGIN/COMMIT (and out of a tool's per-migration transaction)."
LINKS = (
    (
        "CREATE INDEX CONCURRENTLY",
        "https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY",
    ),
)
_CONC = re.compile(r"^(CREATE (UNIQUE )?INDEX|DROP INDEX|REINDEX \w+) CONCURRENTLY\b")


def check(stmt: Statement, state: State) -> Iterator[Finding]:
    if not state.in_transaction or not _CONC.match(stmt.normal):
        return
    message = (
        f"{stmt.normal.split(' CONCURRENTLY')[0]} CONCURRENTLY cannot run inside a "
        f"transaction block: the migration fails here"
    )
    yield finding(ID, HELP, stmt, Severity.ERROR, message)
