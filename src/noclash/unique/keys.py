"""Unique keys as declared in table metadata: the shared vocabulary of the primitives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
    bindparam,
)
from sqlalchemy.sql.elements import ClauseElement, ColumnClause, ColumnElement
from sqlalchemy.sql.visitors import replacement_traverse

# How a caller names the key it means: its name, its columns (for a key the application
# left unnamed, as ``Column(unique=True)`` does), the declared object, or a UniqueKey.
KeyRef = str | Sequence[str] | Index | UniqueConstraint | PrimaryKeyConstraint


@dataclass(frozen=True)
class UniqueKey:
    """A unique constraint, primary key or unique index (possibly partial) of a table."""

    table: Table
    name: str | None
    # The columns the key is on, by name; for an expression index (``lower(slug)``) the
    # columns its expressions read, so a violation still names the field.
    columns: tuple[str, ...]
    # The partial index predicate per dialect name ({"postgresql": ..., "sqlite": ...}).
    where: dict[str, Any]
    # What an expression index is on (``lower(slug)``), in declaration order; empty when
    # the key is on plain columns. The conflict target and the winner's read must use
    # these: ``ON CONFLICT (slug)`` matches no index on ``lower(slug)``, and ``slug = 'A'``
    # misses the row ``'a'`` that holds the key.
    expressions: tuple[Any, ...] = ()
    # The Index or constraint this was read from: an object given to find_key is matched
    # by identity, since an unnamed one has no name to match by.
    source: Any = field(default=None, compare=False, repr=False)

    def where_for(self, dialect_name: str) -> ColumnElement[bool] | None:
        return self.where.get(dialect_name)

    @property
    def is_partial(self) -> bool:
        return any(w is not None for w in self.where.values())

    def conflict_target(self) -> list[Any]:
        """The ``ON CONFLICT (...)`` elements that make the database pick this key."""
        if self.expressions:
            return [_on_table(e, self.table) for e in self.expressions]
        return [self.table.c[c] for c in self.columns]

    def matches(self, values: Mapping[str, Any]) -> list[ColumnElement[bool]]:
        """Conditions true of the row that holds the key ``values`` would take (the
        partial predicate not included)."""
        if self.expressions:
            return [
                _on_table(e, self.table) == _with_values(e, self.table, values)
                for e in self.expressions
            ]
        return [self.table.c[c] == values[c] for c in self.columns]


def _table_column(element: Any, table: Table) -> Column[Any] | None:
    """The column of ``table`` that ``element`` names: expressions in an ``Index`` may use
    ``sa.column("slug")``, which is bound to no table."""
    if isinstance(element, ColumnClause) and element.table in (None, table):
        for column in table.c:
            if column.name == element.name:
                return column
    return None


def _on_table(expression: Any, table: Table) -> Any:
    """``expression`` with every column it reads bound to ``table``."""
    if not isinstance(expression, ClauseElement):
        return expression
    return replacement_traverse(expression, {}, lambda e: _table_column(e, table))


def _with_values(expression: Any, table: Table, values: Mapping[str, Any]) -> Any:
    """``expression`` computed on ``values`` instead of a row: ``lower(:slug)``."""

    def value_of(element: Any) -> Any:
        column = _table_column(element, table)
        if column is None:
            return None
        value = values[column.name]
        if isinstance(value, ClauseElement):
            return value
        return bindparam(None, value, type_=column.type)

    return replacement_traverse(expression, {}, value_of)


def unique_keys(table: Table) -> list[UniqueKey]:
    """Every unique key of ``table``, in declaration order (constraints, then indexes)."""
    keys: list[UniqueKey] = []
    for constraint in table.constraints:
        if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint) and constraint.columns:
            name = constraint.name if isinstance(constraint.name, str) else None
            columns = tuple(c.name for c in constraint.columns)
            keys.append(UniqueKey(table, name, columns, {}, source=constraint))
    for index in sorted(table.indexes, key=lambda i: i.name or ""):
        if index.unique:
            where = {
                dialect: opts.get("where")
                for dialect, opts in index.dialect_options.items()
                if opts.get("where") is not None
            }
            cols = tuple(c.name for c in index.columns)
            on_columns = all(isinstance(e, Column) for e in index.expressions)
            expressions = () if on_columns else tuple(index.expressions)
            name = index.name if isinstance(index.name, str) else None
            keys.append(UniqueKey(table, name, cols, where, expressions, source=index))
    return keys


def find_key(table: Table, key: KeyRef | UniqueKey) -> UniqueKey:
    """Resolve a key given by name, by its columns, as the declared Index or constraint,
    or as a UniqueKey.

    A name is looked up first; a string that names no key, or a sequence of strings, is
    taken as the key's columns (a full key before a partial one), which is how a key the
    application left unnamed (``Column("email", unique=True)``) is targeted. A declared
    object is matched by identity: unnamed ones all share the name ``None``.
    """
    if isinstance(key, UniqueKey):
        return key
    keys = unique_keys(table)
    if isinstance(key, Index | UniqueConstraint | PrimaryKeyConstraint):
        for candidate in keys:
            if candidate.source is key:
                return candidate
        raise LookupError(f"{table.name}: {key!r} is not one of its unique keys")
    if isinstance(key, str):
        for candidate in keys:
            if candidate.name == key:
                return candidate
        columns: tuple[str, ...] = (key,)
    else:
        columns = tuple(key)
    on_columns = [k for k in keys if k.columns == columns and not k.expressions]
    on_columns.sort(key=lambda k: k.is_partial)
    if on_columns:
        return on_columns[0]
    raise LookupError(f"{table.name} declares no unique key named or on {key!r}")


def key_by_name(
    metadata: MetaData,
    name: str,
    table: str | None = None,
    columns: tuple[str, ...] = (),
) -> UniqueKey | None:
    """The key called ``name``; when the database said which ``table`` it is on, only a
    key of a table of that name (PostgreSQL scopes names to a schema, so two schemas may
    each have a ``uq_users_email`` on different columns). If tables of that name in
    several schemas have such a key, the one on the ``columns`` the database reported."""
    found: list[UniqueKey] = []
    for candidate in metadata.tables.values():
        if table is not None and candidate.name != table:
            continue
        found.extend(key for key in unique_keys(candidate) if key.name == name)
    for key in found:
        if key.columns == columns:
            return key
    return found[0] if found else None


def key_by_columns(metadata: MetaData, table: str, columns: tuple[str, ...]) -> UniqueKey | None:
    """The key of ``table`` on exactly ``columns``; a full key wins over a partial one."""
    target = metadata.tables.get(table)
    if target is None:
        # Declared with a schema (metadata.tables says "app.users") while the database,
        # SQLite, says "users".
        target = next((t for t in metadata.tables.values() if t.name == table), None)
    if target is None:
        return None
    # SQLite names an expression index rather than columns: only plain keys can match.
    matches = [k for k in unique_keys(target) if k.columns == columns and not k.expressions]
    matches.sort(key=lambda k: k.is_partial)
    return matches[0] if matches else None
