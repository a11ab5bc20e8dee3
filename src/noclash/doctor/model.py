"""The data the doctor produces: findings and reports.

A finding is plain data (no SQLAlchemy objects) so that the three renderers (rich, JSON,
SARIF) and the repair planner all read the same thing, and so that the JSON schema in
``docs/doctor/index.md`` is simply this module's ``to_dict`` output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

JSON_SCHEMA_VERSION = 1


class Severity(StrEnum):
    """SARIF's three levels; only ``error`` makes ``noclash doctor`` exit with 1."""

    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.NOTE: 2}


def _plain(value: Any) -> Any:
    if isinstance(value, Evidence):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in sorted(dataclasses.asdict(value).items())}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    return value


@dataclass(frozen=True)
class Evidence:
    """What a finding rests on; each check defines its own fields as a subclass.

    ``to_dict`` is what JSON and SARIF show: every field but those named in ``INTERNAL``
    (what the repair planner reads but a report does not show: the index object to
    replace, the lifecycle found), keys sorted, tuples as lists.
    """

    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: _plain(getattr(self, f.name))
            for f in sorted(dataclasses.fields(self), key=lambda f: f.name)
            if f.name not in self.INTERNAL
        }


@dataclass(frozen=True)
class Fix:
    """How to fix a finding: SQL to run by hand, and/or the ``noclash repair`` action.

    ``statements`` are complete statements for the engine the finding is about (a test
    runs every one on a copy of each corpus database); ``idiom`` says how to make the same
    change in the ORM that manages the schema, when the doctor recognised one.
    """

    statements: tuple[str, ...] = ()
    repair: str | None = None
    idiom: str | None = None

    @property
    def sql(self) -> str | None:
        return "; ".join(self.statements) + ";" if self.statements else None

    def to_dict(self) -> dict[str, Any]:
        return {"idiom": self.idiom, "repair": self.repair, "sql": self.sql}


@dataclass(frozen=True)
class Finding:
    """One problem, located at a table (and columns) or, for lint, a file and line."""

    check: str
    severity: Severity
    message: str
    table: str | None = None
    columns: tuple[str, ...] = ()
    evidence: Evidence = field(default_factory=Evidence)
    fix: Fix = field(default_factory=Fix)
    file: str | None = None
    line: int | None = None

    @property
    def location(self) -> str:
        if self.file is not None:
            return f"{self.file}:{self.line or 1}"
        if self.table is None:
            return "-"
        return f"{self.table}({', '.join(self.columns)})" if self.columns else self.table

    def sort_key(self) -> tuple[Any, ...]:
        return (
            self.file or "",
            self.line or 0,
            SEVERITY_ORDER[self.severity],
            self.check,
            self.table or "",
            self.columns,
            self.message,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "check": self.check,
            "columns": list(self.columns),
            "evidence": self.evidence.to_dict(),
            "fix": self.fix.to_dict(),
            "message": self.message,
            "severity": str(self.severity),
            "table": self.table,
        }
        if self.file is not None:
            data["file"] = self.file
            data["line"] = self.line
        return data


@dataclass
class Report:
    """Every finding of one run, plus what was inspected."""

    tool: str
    target: str
    dialect: str | None
    # The migration tool that manages the schema ("django", "alembic", "prisma"), if known.
    orm: str | None = None
    findings: list[Finding] = field(default_factory=list)
    checks_run: list[str] = field(default_factory=list)

    def sorted(self) -> list[Finding]:
        return sorted(self.findings, key=Finding.sort_key)

    @property
    def has_errors(self) -> bool:
        return any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def exit_code(self) -> int:
        """0 when clean (warnings and notes allowed), 1 when any finding is an error."""
        return 1 if self.has_errors else 0

    def counts(self) -> dict[str, int]:
        out = {str(s): 0 for s in Severity}
        for f in self.findings:
            out[str(f.severity)] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "checks_run": sorted(self.checks_run),
            "dialect": self.dialect,
            "findings": [f.to_dict() for f in self.sorted()],
            "orm": self.orm,
            "schema_version": JSON_SCHEMA_VERSION,
            "summary": self.counts(),
            "target": self.target,
            "tool": self.tool,
        }
