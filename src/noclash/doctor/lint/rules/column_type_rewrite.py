"""``ALTER COLUMN ... TYPE`` rewrites the table, and its cast can fail halfway.

Most type changes rewrite every row and every index under ACCESS EXCLUSIVE; a ``USING
col::uuid`` (seeds 000/001) aborts on the first value that is not a uuid. Run
``noclash doctor`` (check ``uuid-castability``) first, or add a new column and backfill.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from noclash.doctor.lint.statements import (
    IDENT,
    NAME,
    State,
    Statement,
    existing_table,
    finding,
    table_name,
)
from noclash.doctor.model import Finding, Severity

ID = "column-type-rewrite"
TITLE = "Column type change rewrites the table"
HELP = (
    "Add a new column, backfill it in batches, switch reads, then drop the old one; check "
    "castability first with `noclash doctor`."
)
LINKS = (
    (
        "ALTER TABLE notes on rewrites",
        "https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-NOTES",
    ),
    ("doctor: uuid-castability", "uuid-castability.md"),
)
_ALTER = re.compile(rf"^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?({NAME}) ")
_TYPE = re.compile(rf"ALTER (?:COLUMN )?({IDENT}) (?:SET DATA )?TYPE (\S+)")


def check(stmt: Statement, state: State) -> Iterator[Finding]:
    m = _ALTER.match(stmt.normal)
    if not m or (table := existing_table(m.group(1), state)) is None:
        return
    for col, new_type in _TYPE.findall(stmt.normal):
        column = table_name(col)
        message = (
            f"changing {table}.{column} to {new_type.lower()} can rewrite the table under "
            f"ACCESS EXCLUSIVE, and a failing cast aborts the migration"
        )
        yield finding(ID, HELP, stmt, Severity.WARNING, message, table=table, columns=(column,))
