"""Unique keys as declared in table metadata: the shared vocabulary of the primitives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Index, MetaData, PrimaryKeyConstraint, Table, UniqueConstraint
from sqlalchemy.sql.elements import ColumnElement


@dataclass(frozen=True)
class UniqueKey:
    """A unique constraint, primary key or unique index (possibly partial) of a table."""

    table: Table
    name: str | None
    columns: tuple[str, ...]
    # The partial index predicate per dialect name ({"postgresql": ..., "sqlite": ...}).
    where: dict[str, Any]

    def where_for(self, dialect_name: str) -> ColumnElement[bool] | None:
        return self.where.get(dialect_name)

    @property
    def is_partial(self) -> bool:
        return any(w is not None for w in self.where.values())


def unique_keys(table: Table) -> list[UniqueKey]:
    """Every unique key of ``table``, in declaration order (constraints, then indexes)."""
    keys: list[UniqueKey] = []
    for constraint in table.constraints:
        if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint) and constraint.columns:
            name = constraint.name if isinstance(constraint.name, str) else None
            keys.append(UniqueKey(table, name, tuple(c.name for c in constraint.columns), {}))
    for index in sorted(table.indexes, key=lambda i: i.name or ""):
        if index.unique:
            where = {
                dialect: opts.get("where")
                for dialect, opts in index.dialect_options.items()
                if opts.get("where") is not None
            }
            cols = tuple(c.name for c in index.columns)
            keys.append(UniqueKey(table, index.name, cols, where))
    return keys


def find_key(table: Table, key: str | Index | UniqueConstraint | UniqueKey) -> UniqueKey:
    """Resolve a key given by name, Index, UniqueConstraint or UniqueKey."""
    if isinstance(key, UniqueKey):
        return key
    name = key if isinstance(key, str) else key.name
    for candidate in unique_keys(table):
        if candidate.name == name:
            return candidate
    raise LookupError(f"{table.name} declares no unique key named {name!r}")


def key_by_name(metadata: MetaData, name: str) -> UniqueKey | None:
    for table in metadata.tables.values():
        for key in unique_keys(table):
            if key.name == name:
                return key
    return None


def key_by_columns(metadata: MetaData, table: str, columns: tuple[str, ...]) -> UniqueKey | None:
    """The key of ``table`` on exactly ``columns``; a full key wins over a partial one."""
    target = metadata.tables.get(table)
    if target is None:
        return None
    matches = [k for k in unique_keys(target) if k.columns == columns]
    matches.sort(key=lambda k: k.is_partial)
    return matches[0] if matches else None
