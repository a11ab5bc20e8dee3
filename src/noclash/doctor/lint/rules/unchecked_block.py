"""Statements inside a ``DO`` block or a function body are not checked.

Lint reads a migration statement by statement; a ``DO $$ ... $$`` block (or a function or
procedure the migration defines and calls) is one statement whose body is PL/pgSQL, so an
``ALTER COLUMN ... TYPE uuid`` or a ``CREATE INDEX`` written inside it went unreported, as
if the file were clean. Lint does not parse PL/pgSQL (control flow, dynamic ``EXECUTE``
strings); it says instead which blocks hold statements its rules are about, so that a
clean report is not read as "checked".
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from noclash.doctor.lint.statements import State, Statement, finding
from noclash.doctor.model import Finding, Severity

ID = "unchecked-block"
TITLE = "Statements in a DO block or function body are not checked"
HELP = (
    "Review the statements inside the block by hand, or move them out of it as plain "
    "statements so that lint checks them."
)
LINKS = (
    ("DO", "https://www.postgresql.org/docs/current/sql-do.html"),
    ("CREATE FUNCTION", "https://www.postgresql.org/docs/current/sql-createfunction.html"),
)
_BLOCK = re.compile(r"^(?:DO|CREATE (?:OR REPLACE )?(FUNCTION|PROCEDURE))\b")
# What the other rules check: a body with none of these holds nothing they would report.
_CHECKED = re.compile(
    r"\b(ALTER\s+TABLE|CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX)\b", re.I
)


def check(stmt: Statement, state: State) -> Iterator[Finding]:
    m = _BLOCK.match(stmt.normal)
    if not m:
        return
    body = stmt.sql[len(m.group(0)) :]
    kinds = sorted({re.sub(r"\s+", " ", k.upper()) for k in _CHECKED.findall(body)})
    if not kinds:
        return
    what = f"this {m.group(1).lower()}'s body" if m.group(1) else "this DO block"
    when = " (they run when it is called)" if m.group(1) else ""
    message = (
        f"the statements inside {what} ({', '.join(kinds)}) were not checked by lint"
        f"{when}: review them by hand"
    )
    yield finding(ID, HELP, stmt, Severity.NOTE, message)
