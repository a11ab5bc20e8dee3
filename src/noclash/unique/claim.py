"""Claim-or-create on a declared unique key: ``insert_or_get``.

The pattern every "get or create" should be::

    INSERT INTO t (...) VALUES (...)
    ON CONFLICT (key columns) WHERE <partial predicate> DO NOTHING
    RETURNING *;
    -- no row back: somebody else holds the key; read the winner by that key
    SELECT * FROM t WHERE <key columns> = ... AND <partial predicate>;

The database decides the race; there is no SELECT before the INSERT. The conflict target
and its predicate come from the declaration in the table metadata, so the statement always
matches the index (PostgreSQL and SQLite both require the predicate to infer a partial
index). Only the targeted key is absorbed: a violation of any *other* unique key raises a
:class:`UniqueViolation` at once instead of looping forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row, Table, and_, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from noclash.db.dialects import dialect_for
from noclash.unique.errors import ClaimNotSettled
from noclash.unique.keys import KeyRef, UniqueKey, find_key
from noclash.unique.translate import translate

DEFAULT_ATTEMPTS = 5


def insert_or_get(
    conn: Connection,
    table: Table,
    values: Mapping[str, Any],
    *,
    key: KeyRef | UniqueKey,
    lock: bool = False,
    attempts: int = DEFAULT_ATTEMPTS,
) -> tuple[Row[Any], bool]:
    """Insert ``values`` unless a row already holds ``key``; return ``(row, created)``.

    ``created`` is true only when this call's INSERT wrote the row. ``lock=True`` reads an
    existing winner ``FOR UPDATE`` (PostgreSQL; SQLite's write transaction already
    excludes other writers). The call belongs in the caller's transaction.

    ``key`` is the key's name, its columns (for one left unnamed), the declared ``Index``
    or constraint, or a :class:`UniqueKey`; an expression index (``lower(slug)``) is
    targeted and read by its expressions.
    """
    unique = find_key(table, key)
    if not unique.columns:
        # An index on text() names no column: there is nothing to read the winner by, and
        # an ON CONFLICT without a target would absorb a clash on any key of the table.
        raise ValueError(
            f"{table.name}: key {unique.name} is on an expression that names no column; "
            "declare it with column expressions (sa.func.lower(table.c.slug))"
        )
    dialect = dialect_for(conn)
    where = unique.where_for(dialect.name)
    missing = [c for c in unique.columns if c not in values]
    if missing:
        raise ValueError(f"values lack the key columns {missing} of {unique.name}")

    insert = (
        dialect.insert(table)
        .values(dict(values))
        .on_conflict_do_nothing(index_elements=unique.conflict_target(), index_where=where)
        .returning(*table.c)
    )
    match = unique.matches(values)
    if where is not None:
        match.append(where)
    read = select(table).where(and_(*match)).limit(1)
    if lock:
        read = read.with_for_update()

    for _ in range(max(1, attempts)):
        try:
            row = conn.execute(insert).first()
        except DBAPIError as exc:
            violation = translate(exc, table.metadata)
            if violation is None:
                raise
            raise violation from exc
        if row is not None:
            return row, True
        winner = conn.execute(read).first()
        if winner is not None:
            return winner, False
    raise ClaimNotSettled(
        f"{table.name}: key {unique.name} conflicted {attempts} times and no winner was read"
    )
