"""Per-dialect behaviour, chosen once per engine.

Shared code asks a capability flag or calls a method of :class:`~.base.Dialect`; it never
tests ``dialect.name``. Modelled on Django's ``backends/*/features.py`` and Alembic's
``ddl/impl.py``.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy.engine import Connection, Engine

from noclash.db.dialects.base import Dialect, UnsupportedDialect


@cache
def _by_name(name: str) -> Dialect:
    if name == "sqlite":
        from noclash.db.dialects.sqlite import SQLiteDialect

        return SQLiteDialect()
    if name == "postgresql":
        from noclash.db.dialects.postgresql import PostgreSQLDialect

        return PostgreSQLDialect()
    raise UnsupportedDialect(f"noclash supports SQLite and PostgreSQL, not {name!r}")


def dialect_for(bind: Engine | Connection) -> Dialect:
    """The noclash dialect object for an engine or connection."""
    return _by_name(bind.dialect.name)


__all__ = ["Dialect", "UnsupportedDialect", "dialect_for"]
