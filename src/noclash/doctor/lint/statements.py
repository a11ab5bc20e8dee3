"""What a lint rule sees and says: one statement, the walk's state, and its finding.

Kept apart from :mod:`noclash.doctor.lint` (which imports the rules) so that every rule can
import these at the top of its module, and so that what all rules share has one home: which
table a statement touches when the file did not create it, and how a rule reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from noclash.doctor.model import Finding, Fix, Severity


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int
    file: str

    @property
    def normal(self) -> str:
        """Upper-cased with whitespace collapsed, for matching."""
        return re.sub(r"\s+", " ", self.sql).strip().upper()


@dataclass
class State:
    in_transaction: bool = False
    created_tables: set[str] = field(default_factory=set)


def table_name(raw: str) -> str:
    return raw.strip('"').split("(")[0].strip('"').lower()


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


__all__ = ["State", "Statement", "existing_table", "finding", "table_name"]
