"""Statements compiled once per dialect and run through the driver with plain values.

For the few statements that run many times a second over many rows (the dispatcher's
claim and settlement), SQLAlchemy's per-execution work costs more than the database's
own: a cache-key lookup and a parameter dictionary per row of an ``executemany``, type
processing through several layers per value. :class:`Prepared` does that work once: it
compiles the statement for the connection's dialect, keeps the driver's SQL and, per
parameter slot, the type's own bind processor (the same conversion SQLAlchemy applies:
a UUID as 32 hex digits and a timestamp as text on SQLite, untouched on PostgreSQL),
and runs it with :meth:`~sqlalchemy.engine.Connection.exec_driver_sql`, so events,
error wrapping (:class:`~sqlalchemy.exc.DBAPIError`) and the transaction are those of
the connection. Results come back as tuples in the order of the statement's columns,
converted by the columns' result processors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from noclash.db.dialects import dialect_for

Processor = Callable[[Any], Any] | None
# The attribute of a dialect that holds what was compiled for it (Prepared.on).
_ON_DIALECT = "_noclash_prepared"
_CONSTANT = object()  # a slot whose value is written in the statement (a literal bound once)


class Compiled:
    """One statement for one dialect: its SQL and how to turn values into parameters."""

    def __init__(self, statement: sa.Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        names = (
            list(compiled.positiontup or ())
            if self.positional
            else list(dict.fromkeys(compiled.bind_names.values()))
        )
        self._slots: list[tuple[str, Processor, Any]] = []
        for name in names:
            bind = compiled.binds[name]
            process = _bind_processor(bind.type, dialect)
            if bind.required:  # a bindparam the caller names: a value per execution
                constant = _CONSTANT
            else:  # a literal of the statement
                value = bind.effective_value
                constant = process(value) if process is not None and value is not None else value
            self._slots.append((name, process, constant))
        columns = getattr(statement, "exported_columns", ())
        self._results: list[tuple[int, Processor]] = [
            (i, process)
            for i, column in enumerate(columns)
            if (process := column.type.dialect_impl(dialect).result_processor(dialect, None))
        ]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for ``values`` (by bind name; literals are filled in)."""
        out = []
        for name, process, constant in self._slots:
            if constant is not _CONSTANT:
                out.append(constant)
            else:
                value = values[name]
                out.append(process(value) if process is not None and value is not None else value)
        if self.positional:
            return tuple(out)
        return dict(zip((slot[0] for slot in self._slots), out, strict=True))

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run it once; the rows it returns (none for a statement without RETURNING)."""
        result = conn.exec_driver_sql(self.sql, self.parameters(values))  # type: ignore[arg-type]
        if not result.returns_rows:
            return []
        rows = [tuple(row) for row in result.fetchall()]
        if self._results:
            rows = [self._convert(row) for row in rows]
        return rows

    def count(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run it once; the rows it changed (an INSERT: the rows it stored)."""
        return conn.exec_driver_sql(self.sql, self.parameters(values)).rowcount  # type: ignore[arg-type]

    def executemany(self, conn: Connection, values: Sequence[Mapping[str, Any]]) -> int:
        """Run it once per mapping in one ``executemany``; rows changed (-1 when unknown)."""
        if not values:
            return 0
        params = [self.parameters(v) for v in values]
        result = conn.exec_driver_sql(self.sql, params)  # type: ignore[arg-type]
        return result.rowcount if result.rowcount is not None else -1

    def _convert(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(row)
        for i, process in self._results:
            if out[i] is not None:
                assert process is not None
                out[i] = process(out[i])
        return tuple(out)


class Prepared:
    """A statement built once, compiled on first use for each dialect it runs on.

    ``binary``: its parameters go in the driver's binary format where it has one
    (:meth:`noclash.db.dialects.base.Dialect.binary_parameters`), for a statement that
    binds arrays of many values.
    """

    def __init__(self, statement: sa.Executable, *, binary: bool = False) -> None:
        self.statement = statement
        self.binary = binary

    def on(self, conn: Connection) -> Compiled:
        """The statement compiled for ``conn``'s dialect, kept on the dialect itself.

        There, the compiled form lives exactly as long as the engine's dialect. Kept here
        instead (by dialect), it would keep every dialect alive, since the type processors
        it holds refer to their dialect: a process that makes engines over and over, as
        the tests and the benchmark do, would keep every engine's dialect it ever made.
        """
        dialect = conn.dialect
        cache: dict[Prepared, Compiled] = dialect.__dict__.setdefault(_ON_DIALECT, {})
        compiled = cache.get(self)
        if compiled is None:
            compiled = Compiled(self.statement, dialect)
            if self.binary:
                compiled.sql = dialect_for(conn).binary_parameters(compiled.sql)
            cache[self] = compiled
        return compiled


def _bind_processor(type_: sa.types.TypeEngine[Any], dialect: Dialect) -> Processor:
    return type_.dialect_impl(dialect).bind_processor(dialect)


__all__ = ["Compiled", "Prepared"]
