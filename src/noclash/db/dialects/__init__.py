"""Per-dialect behaviour, chosen once per engine.

Shared code asks a capability flag or calls a method of :class:`~.base.Dialect`; it never
tests ``dialect.name``. Modelled on Django's ``backends/*/features.py`` and Alembic's
``ddl/impl.py``.

:class:`DialectRegistry` is the one mechanism that maps SQLAlchemy's dialect name to a
behaviour object. Two hierarchies use it: the application's (:class:`~.base.Dialect`, how
noclash's own schema is written to) and the doctor's (``noclash.doctor.dialects``, how any
database is inspected and repaired). They stay two hierarchies on purpose: the doctor reads
databases noclash did not design, so its flags (``can_drop_table_constraint``, catalog
queries) are about engines, not about noclash's schema, and it must not inherit application
flags such as ``messages_move_conversations`` that mean nothing on a stranger's database.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import Generic, TypeVar

from sqlalchemy.engine import Connection, Engine

from noclash.db.dialects.base import Dialect, UnsupportedDialect

T = TypeVar("T")


class DialectRegistry(Generic[T]):
    """Behaviour objects by SQLAlchemy dialect name, imported lazily and built once.

    ``classes`` maps a dialect name to ``"module:Class"``: a dialect module is imported
    only when an engine of that kind is used (the PostgreSQL module imports the
    PostgreSQL-only ``insert``). ``what`` names the user of the registry in the error for
    any other engine.
    """

    def __init__(self, classes: Mapping[str, str], *, what: str) -> None:
        self._classes = dict(classes)
        self._what = what
        self._instances: dict[str, T] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._classes)

    def supports(self, name: str) -> bool:
        return name in self._classes

    def get(self, name: str) -> T:
        """The behaviour object for dialect ``name``; :class:`UnsupportedDialect` otherwise."""
        if name not in self._instances:
            if name not in self._classes:
                raise UnsupportedDialect(
                    f"{self._what} supports SQLite and PostgreSQL, not {name!r}"
                )
            module, _, cls = self._classes[name].partition(":")
            self._instances[name] = getattr(importlib.import_module(module), cls)()
        return self._instances[name]

    def for_bind(self, bind: Engine | Connection) -> T:
        return self.get(bind.dialect.name)

    def every(self) -> tuple[T, ...]:
        """One object per supported database, for code that holds a driver error but no
        engine: a DBAPI exception does not say which dialect raised it."""
        return tuple(self.get(name) for name in self._classes)


APP_DIALECTS: DialectRegistry[Dialect] = DialectRegistry(
    {
        "sqlite": "noclash.db.dialects.sqlite:SQLiteDialect",
        "postgresql": "noclash.db.dialects.postgresql:PostgreSQLDialect",
    },
    what="noclash",
)


@cache
def _by_name(name: str) -> Dialect:
    return APP_DIALECTS.get(name)


def dialect_for(bind: Engine | Connection) -> Dialect:
    """The noclash dialect object for an engine or connection."""
    return _by_name(bind.dialect.name)


__all__ = ["APP_DIALECTS", "Dialect", "DialectRegistry", "UnsupportedDialect", "dialect_for"]
