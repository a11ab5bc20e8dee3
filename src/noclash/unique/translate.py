"""The single boundary where driver errors become :class:`UniqueViolation`.

PostgreSQL (psycopg 3) reports SQLSTATE 23505 with ``diag.constraint_name``; SQLite
reports extended code 2067 (1555 for a primary key) with ``UNIQUE constraint failed:
t.c1, t.c2`` or ``... index 'name'``. Both are mapped back to the constraint or index
declared in the table metadata, so callers learn *which* key fired, partial indexes
included, and the API can name the field in its 409.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import MetaData
from sqlalchemy.exc import DBAPIError

from noclash.db.dialects import APP_DIALECTS
from noclash.db.dialects.base import DriverUniqueError
from noclash.unique.errors import UniqueViolation
from noclash.unique.keys import key_by_columns, key_by_name

# A driver error does not say which database raised it: each dialect is asked in turn.
_PARSERS = APP_DIALECTS.every()


def _driver_error(exc: BaseException) -> DriverUniqueError | None:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    for parser in _PARSERS:
        if (found := parser.unique_error(orig)) is not None:
            return found
    return None


def translate(exc: BaseException, metadata: MetaData | None = None) -> UniqueViolation | None:
    """``exc`` as a :class:`UniqueViolation`, or ``None`` if it is not a unique violation.

    Accepts a SQLAlchemy ``DBAPIError`` or a raw driver exception.
    """
    found = _driver_error(exc)
    if found is None:
        return None
    key = None
    if metadata is not None:
        if found.constraint:
            key = key_by_name(metadata, found.constraint, found.table, found.columns)
        elif found.table:
            key = key_by_columns(metadata, found.table, found.columns)
    if key is not None:
        table, columns, constraint = key.table.name, key.columns, key.name
    else:
        table = found.table
        columns = found.columns
        constraint = found.constraint
    what = ", ".join(columns) if columns else (constraint or "a unique key")
    message = f"duplicate value for {table or '?'} ({what})"
    return UniqueViolation(message, table=table, columns=tuple(columns), constraint=constraint)


class translating:  # lower case: it reads as a call, `with translating(metadata):`
    """Re-raise unique violations inside the block as :class:`UniqueViolation`.

    A class rather than a ``@contextmanager`` generator: it wraps every create, and a
    generator-based context manager costs three times as much to enter and leave.
    """

    __slots__ = ("metadata",)

    def __init__(self, metadata: MetaData | None = None) -> None:
        self.metadata = metadata

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> bool:
        if isinstance(exc, DBAPIError):
            violation = translate(exc, self.metadata)
            if violation is not None:
                raise violation from exc
        return False
