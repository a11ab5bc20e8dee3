"""The doctor's dialects, registered with the same mechanism as the application's.

:data:`DOCTOR_DIALECTS` is a :class:`noclash.db.dialects.DialectRegistry`: one way to go
from an engine to its behaviour object for both hierarchies (see that module for why the
doctor keeps a hierarchy of its own).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection, Engine

from noclash.db.dialects import DialectRegistry
from noclash.doctor.dialects.base import DoctorDialect, is_uuid_text, literal

DOCTOR_DIALECTS: DialectRegistry[DoctorDialect] = DialectRegistry(
    {
        "sqlite": "noclash.doctor.dialects.sqlite:SQLiteDoctor",
        "postgresql": "noclash.doctor.dialects.postgresql:PostgreSQLDoctor",
    },
    what="the doctor",
)


def doctor_dialect(bind: Engine | Connection) -> DoctorDialect:
    return DOCTOR_DIALECTS.for_bind(bind)


def supported(name: str) -> bool:
    return DOCTOR_DIALECTS.supports(name)


__all__ = [
    "DOCTOR_DIALECTS",
    "DoctorDialect",
    "doctor_dialect",
    "is_uuid_text",
    "literal",
    "supported",
]
