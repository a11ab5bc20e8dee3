"""What a lint rule sees and says: one statement, the walk's state, and its finding.

Kept apart from :mod:`noclash.doctor.lint` (which imports the rules) so that every rule can
import these at the top of its module, and so that what all rules share has one home: which
table a statement touches when the file did not create it, and how a rule reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from noclash.doctor.model import Finding, Fix, Severity

# A quoted identifier, a string literal or a dollar-quoted body: kept as written by
# :attr:`Statement.normal` (upper-casing them changed names and values).
_QUOTED = re.compile(r""""(?:[^"]|"")*"|'(?:[^']|'')*'|\$(\w*)\$.*?\$\1\$""", re.S)
# One identifier, quoted (``"Chat Bots"``, ``"we""ird"``) or not, and a dotted name of
# them (``app."Conversations"``): what the rules' patterns capture a name with.
IDENT = r'(?:"(?:[^"]|"")*"|[^\s."(),;]+)'
NAME = rf"(?:{IDENT}(?: ?\. ?{IDENT})*)"
_PART = re.compile(IDENT)


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int
    file: str

    @property
    def normal(self) -> str:
        """Whitespace collapsed and keywords upper-cased, for matching; quoted names,
        string literals and dollar-quoted bodies are kept exactly as written, so that
        :func:`table_name` can read a name as the engine does."""
        out, pos = [], 0
        for m in _QUOTED.finditer(self.sql):
            out.append(re.sub(r"\s+", " ", self.sql[pos : m.start()]).upper())
            out.append(m.group(0))
            pos = m.end()
        out.append(re.sub(r"\s+", " ", self.sql[pos:]).upper())
        return "".join(out).strip()


@dataclass
class State:
    in_transaction: bool = False
    # Tables this file creates, as :func:`table_name` spells them.
    created_tables: set[str] = field(default_factory=set)


def table_name(raw: str) -> str:
    """A (dotted) name as PostgreSQL reads it: a quoted part exactly, its ``""`` one ``"``;
    an unquoted part folded to lower case. ``app."Conversations"`` -> ``app.Conversations``.

    Upper-casing the statement and cutting at the first space had turned ``"Conversations"``
    into ``conversations`` and ``"Chat Bots"`` into ``chat``: findings named other tables,
    and a table the file created hid an existing table of the garbled same name.
    """
    parts = []
    for m in _PART.finditer(raw):
        part = m.group(0)
        if part.startswith('"'):
            parts.append(part[1:-1].replace('""', '"'))
        else:
            parts.append(part.lower())
    return ".".join(parts)


def existing_table(raw: str, state: State) -> str | None:
    """The table ``raw`` names, or ``None`` when this file created it: a table no one else
    can see yet has no readers or writers to block, so no lock on it is a hazard."""
    table = table_name(raw)
    return None if table in state.created_tables else table


def finding(
    rule: str,
    advice: str,
    stmt: Statement,
    severity: Severity,
    message: str,
    *,
    table: str | None = None,
    columns: tuple[str, ...] = (),
) -> Finding:
    """A finding of ``rule`` at ``stmt``'s file and line.

    Its fix is the rule's ``advice`` (its ``HELP``), not SQL to run: the statement is in a
    migration someone is writing, and only they can move or rewrite it. A trailing ``;``
    is dropped because :attr:`Fix.sql` ends every statement with one.
    """
    return Finding(
        check=rule,
        severity=severity,
        file=stmt.file,
        line=stmt.line,
        table=table,
        columns=columns,
        message=message,
        fix=Fix(statements=(advice.rstrip(";"),)),
    )


__all__ = ["IDENT", "NAME", "State", "Statement", "existing_table", "finding", "table_name"]
