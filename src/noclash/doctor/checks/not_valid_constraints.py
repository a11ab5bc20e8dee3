"""Constraints added ``NOT VALID`` and never validated.

``ADD CONSTRAINT ... NOT VALID`` is the right first step on a big table (no long lock),
but until ``VALIDATE CONSTRAINT`` runs, existing rows are unchecked: the guarantee the
application relies on does not hold for old data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from noclash.doctor.context import Context
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "not-valid-constraints"
TITLE = "NOT VALID constraints"
HELP = (
    "Run `ALTER TABLE ... VALIDATE CONSTRAINT ...` (SHARE UPDATE EXCLUSIVE lock: reads and "
    "writes continue); fix the rows it reports first."
)
LINKS = (
    (
        "ALTER TABLE ... VALIDATE CONSTRAINT",
        "https://www.postgresql.org/docs/current/sql-altertable.html",
    ),
)


@dataclass(frozen=True)
class NotValidConstraintsEvidence(Evidence):
    constraint: str
    definition: str


def run(ctx: Context) -> Iterator[Finding]:
    for tname, table in ctx.catalog.tables.items():
        for con in table.constraints:
            if con.validated:
                continue
            yield Finding(
                check=ID,
                severity=Severity.WARNING,
                table=tname,
                message=(
                    f"{con.kind} constraint {con.name} on {tname} is NOT VALID: existing rows "
                    f"were never checked against {con.definition}"
                ),
                evidence=NotValidConstraintsEvidence(
                    constraint=con.name, definition=con.definition
                ),
                fix=Fix(
                    statements=(
                        f"ALTER TABLE {ctx.t(tname)} VALIDATE CONSTRAINT {ctx.q(con.name)}",
                    )
                ),
            )
