"""``ADD CONSTRAINT ... UNIQUE (cols)`` builds its index under ACCESS EXCLUSIVE.

On an existing table every read and write waits for the whole index build. Build the index
``CONCURRENTLY`` first, then attach it: ``ADD CONSTRAINT ... UNIQUE USING INDEX``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from noclash.doctor.lint.statements import IDENT, NAME, State, Statement, existing_table, finding
from noclash.doctor.model import Finding, Severity

ID = "unique-constraint-without-index"
TITLE = "Unique constraint added without USING INDEX"
HELP = (
    "CREATE UNIQUE INDEX CONCURRENTLY ix ON t (cols); then "
    "ALTER TABLE t ADD CONSTRAINT name UNIQUE USING INDEX ix;"
)
LINKS = (
    ("ALTER TABLE ... USING INDEX", "https://www.postgresql.org/docs/current/sql-altertable.html"),
    (
        "squawk: disallowed-unique-constraint",
        "https://squawkhq.com/docs/disallowed-unique-constraint",
    ),
)
_ADD = re.compile(
    rf"^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?({NAME}) .*\bADD (?:CONSTRAINT {IDENT} |COLUMN .*?)?"
    r"(UNIQUE|PRIMARY KEY)\b"
)


def check(stmt: Statement, state: State) -> Iterator[Finding]:
    m = _ADD.match(stmt.normal)
    if not m or "USING INDEX" in stmt.normal:
        return
    if (table := existing_table(m.group(1), state)) is None:
        return
    message = (
        f"adding a {m.group(2)} constraint to {table} builds its index under an ACCESS "
        f"EXCLUSIVE lock: reads and writes wait for the whole build"
    )
    yield finding(ID, HELP, stmt, Severity.ERROR, message, table=table)
