"""Doctor and repair: find duplicate-key hazards in any SQLite or PostgreSQL database.

The library behind ``noclash doctor | repair | lint``; the CLI only parses flags and
formats what these functions return. It depends on database introspection only, never on
noclash's chat code, so it works on databases of any schema.
"""

from noclash.doctor.context import Options
from noclash.doctor.diagnose import diagnose
from noclash.doctor.errors import (
    CannotConnect,
    CannotRead,
    DoctorError,
    RepairFailed,
    UnsupportedDatabase,
    UnsupportedSchema,
)
from noclash.doctor.intent import KeySpec
from noclash.doctor.lint import lint_files, lint_sql
from noclash.doctor.model import Finding, Fix, Report, Severity
from noclash.doctor.repairs import Action, RepairResult, repair

__all__ = [
    "Action",
    "CannotConnect",
    "CannotRead",
    "DoctorError",
    "Finding",
    "Fix",
    "KeySpec",
    "Options",
    "RepairFailed",
    "RepairResult",
    "Report",
    "Severity",
    "UnsupportedDatabase",
    "UnsupportedSchema",
    "diagnose",
    "lint_files",
    "lint_sql",
    "repair",
]
