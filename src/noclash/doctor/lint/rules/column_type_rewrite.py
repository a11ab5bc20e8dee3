"""``ALTER COLUMN ... TYPE`` rewrites the table, and its cast can fail halfway.

Most type changes rewrite every row and every index under ACCESS EXCLUSIVE; a ``USING
col::uuid`` (seeds 000/001) aborts on the first value that is not a uuid. Run
``noclash doctor`` (check ``uuid-castability``) first, or add a new column and backfill.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from noclash.doctor.model import Finding, Fix, Severity

if TYPE_CHECKING:
    from noclash.doctor.lint import State, Statement

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
_ALTER = re.compile(r"^ALTER TABLE (?:ONLY )?(?:IF EXISTS )?(\S+) ")
_TYPE = re.compile(r"ALTER (?:COLUMN )?(\S+) (?:SET DATA )?TYPE (\S+)")


def check(stmt: Statement, state: State) -> Iterator[Finding]:
    from noclash.doctor.lint import table_name

    m = _ALTER.match(stmt.normal)
    if not m:
        return
    table = table_name(m.group(1))
    if table in state.created_tables:
        return
    for col, new_type in _TYPE.findall(stmt.normal):
        yield Finding(
            check=ID,
            severity=Severity.WARNING,
            file=stmt.file,
            line=stmt.line,
            table=table,
            columns=(col.strip('"').lower(),),
            message=(
                f"changing {table}.{col.strip(chr(34)).lower()} to {new_type.lower()} can "
                f"rewrite the table under ACCESS EXCLUSIVE, and a failing cast aborts the "
                f"migration"
            ),
            fix=Fix(statements=(HELP.rstrip(";"),)),
        )
