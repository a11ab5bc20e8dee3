"""The SQL of every fix, in one place: what a finding suggests is what a repair runs.

Each builder returns :class:`Step` objects: a complete statement for the engine at hand,
set-based (no value computed in Python), so the same text is printed by the doctor, run by
``noclash repair --apply`` and written by ``--emit`` into a migration that must work on
every copy of the database (staging, production), not only the one inspected. A step that
changes rows names the SELECT that reads them first, for the backup.

Statements that cannot run in a transaction block (``CREATE INDEX CONCURRENTLY``) and every
statement after the first of them run after the repair's transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from noclash.doctor.catalog import Index, Sequence
from noclash.doctor.context import Context
from noclash.doctor.dialects import literal
from noclash.doctor.lifecycle import Lifecycle, active_predicate
from noclash.doctor.names import fit, identifier


@dataclass(frozen=True)
class Step:
    sql: str
    # SELECT of the rows this statement changes, run (and saved) just before it.
    backup: str | None = None

    @property
    def concurrent(self) -> bool:
        return " CONCURRENTLY " in f" {self.sql} "


def statements(steps: list[Step]) -> tuple[str, ...]:
    return tuple(s.sql for s in steps)


def unique_index_name(table: str, columns: tuple[str, ...]) -> str:
    """The usual name of a unique index on ``table(columns)`` (see :func:`index_name`)."""
    return identifier(table, *columns, suffix="_key")


def index_name(
    ctx: Context,
    table: str,
    columns: tuple[str, ...],
    *,
    suffix: str = "_key",
    unique: bool = True,
    partial: bool = False,
) -> str:
    """A name for the index a fix builds on ``table(columns)`` that no other object has.

    ``CREATE ... INDEX IF NOT EXISTS`` does nothing when *any* index already has the name,
    whatever it indexes: a plain index called ``chat_threads_slug_key`` would leave the key
    unenforced. The usual name (``<table>_<columns><suffix>``) is kept when it is free, or
    when the index holding it already is the one wanted (same columns, same uniqueness,
    partial or not); otherwise ``_2``, ``_3``, ... is added before the suffix. The answer
    depends only on the schema, so a plan and its re-plan inside the transaction agree.
    """
    tab = ctx.catalog.tables[table]
    taken = ctx.memo(("taken-names", table), lambda: ctx.dialect.taken_names(ctx.conn, tab))
    fold = ctx.dialect.fold_name
    n = 1
    while True:
        name = identifier(table, *columns, *([str(n)] if n > 1 else []), suffix=suffix)
        if fold(name) not in taken:
            return name
        same = next((ix for ix in tab.indexes if fold(ix.name) == fold(name)), None)
        if (
            same is not None
            and same.unique == unique
            and same.valid
            and not same.has_expressions
            and same.column_names == columns
            and (same.predicate is not None) == partial
        ):
            return name
        n += 1


def backup_sql(ctx: Context, table: str, where: str) -> str:
    """The SELECT that copies the rows a step is about to change into the backup.

    Every column; and for a SQLite table without a primary key, its rowid first: the
    columns alone could not say which row a backed-up copy was (two rows that differ only
    in the value the repair changed were indistinguishable), while every repair of such a
    table picks and changes rows by rowid, which a rebuild keeps.
    """
    rowid = ctx.dialect.backup_row_id(ctx.catalog.tables[table])
    return f"SELECT {f'{rowid}, ' if rowid else ''}* FROM {ctx.t(table)} WHERE {where}"


def row_key(ctx: Context, table: str) -> str | None:
    """The one expression naming a row for a whole transaction, or ``None``."""
    pk = ctx.catalog.tables[table].primary_key
    if len(pk) == 1:
        return ctx.q(pk[0])
    if not pk:
        return ctx.dialect.stable_row_id
    return None


def add_unique_index(ctx: Context, table: str, columns: tuple[str, ...]) -> list[Step]:
    """A unique index (built without blocking writes where the engine can), attached as a
    constraint where the engine can (what ORMs and ``ON CONFLICT ON CONSTRAINT`` expect)."""
    name = ctx.q(index_name(ctx, table, columns))
    cols = ", ".join(ctx.q(c) for c in columns)
    t = ctx.t(table)
    steps = [
        Step(
            f"CREATE UNIQUE INDEX{ctx.dialect.concurrently()} IF NOT EXISTS {name} ON {t} ({cols})"
        )
    ]
    if ctx.dialect.supports_constraint_using_index:
        steps.append(Step(f"ALTER TABLE {t} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}"))
    return steps


def active_index_name(ctx: Context, table: str, columns: tuple[str, ...]) -> str:
    """A free name for the partial unique index over active rows (:func:`index_name`)."""
    return index_name(ctx, table, columns, suffix="_active_key", partial=True)


def close_active_duplicates(
    ctx: Context, table: str, columns: tuple[str, ...], life: Lifecycle, key: str
) -> Step:
    """Among active rows sharing a key, all but the latest take the first closed state.

    Latest: the largest activity column (``last_message_at``, ``updated_at``, ...), NULLs
    last, then the largest row key. Rows with a NULL in the key never collide: left alone.
    """
    t = ctx.t(table)
    cols = ", ".join(ctx.q(c) for c in columns)
    order = activity_column(ctx, table)
    latest = f"{ctx.q(order)} IS NULL, {ctx.q(order)} DESC, {key} DESC" if order else f"{key} DESC"
    ranked = (
        f"SELECT noclash_key FROM (SELECT {key} AS noclash_key, row_number() OVER "
        f"(PARTITION BY {cols} ORDER BY {latest}) AS noclash_rank FROM {t} "
        f"WHERE {active_predicate(ctx, life)} AND {ctx.not_null(columns)}) AS ranked "
        f"WHERE noclash_rank > 1"
    )
    where = f"{key} IN ({ranked})"
    return Step(
        f"UPDATE {t} SET {ctx.q(life.column)} = {literal(life.closed[0])} WHERE {where}",
        backup=backup_sql(ctx, table, where),
    )


_ACTIVITY = ("last_message_at", "last_activity_at", "updated_at", "modified_at", "created_at")


def activity_column(ctx: Context, table: str) -> str | None:
    from noclash.doctor.intent import snake

    by_snake = {snake(c): c for c in ctx.catalog.tables[table].columns}
    return next((by_snake[c] for c in _ACTIVITY if c in by_snake), None)


def partial_unique(
    ctx: Context,
    table: str,
    columns: tuple[str, ...],
    life: Lifecycle,
    old: Index | None,
    *,
    close_duplicates: bool,
) -> list[Step] | None:
    """A unique index over active rows, replacing ``old`` (if any); ``None`` when active
    duplicates must be closed but no row key is stable enough to do it."""
    t = ctx.t(table)
    cols = ", ".join(ctx.q(c) for c in columns)
    create = Step(
        f"CREATE UNIQUE INDEX{ctx.dialect.concurrently()} IF NOT EXISTS "
        f"{ctx.q(active_index_name(ctx, table, columns))} ON {t} ({cols}) "
        f"WHERE {active_predicate(ctx, life)}"
    )
    steps: list[Step] = []
    if close_duplicates:
        key = row_key(ctx, table)
        if key is None:
            return None
        steps.append(close_active_duplicates(ctx, table, columns, life, key))
    if old is None:
        return [*steps, create]
    drops = [Step(s) for s in ctx.dialect.drop_unique_sql(ctx.conn, ctx.catalog.tables[table], old)]
    # Build the new index first, so uniqueness among active rows holds throughout; a
    # SQLite rebuild, in one transaction, re-creates the table's indexes: build after it.
    return [*steps, *drops, create] if old.inline else [*steps, create, *drops]


def suffix_duplicates(ctx: Context, table: str, column: str) -> list[Step] | None:
    """In each group of equal values the oldest row (smallest key) keeps its value, the
    others get ``-<their key>``; then the unique index. ``None`` without a stable key."""
    key = row_key(ctx, table)
    if key is None:
        return None
    t, q = ctx.t(table), ctx.q(column)
    ranked = (
        f"SELECT noclash_key FROM (SELECT {key} AS noclash_key, row_number() OVER "
        f"(PARTITION BY {q} ORDER BY {key}) AS noclash_rank FROM {t} WHERE {q} IS NOT NULL) "
        f"AS ranked WHERE noclash_rank > 1"
    )
    where = f"{key} IN ({ranked})"
    return [
        Step(
            f"UPDATE {t} SET {q} = {q} || '-' || CAST({key} AS TEXT) WHERE {where}",
            backup=backup_sql(ctx, table, where),
        ),
        *add_unique_index(ctx, table, (column,)),
    ]


def duplicate_groups_sql(
    ctx: Context, table: str, columns: tuple[str, ...], where: str | None = None
) -> str:
    """The groups of rows (matching ``where``) that share ``columns``, with their sizes:
    what must be resolved before a unique index on ``columns`` can be built."""
    cols = ", ".join(ctx.q(c) for c in columns)
    rows = f"{ctx.t(table)} WHERE {where}" if where else ctx.t(table)
    return f"SELECT {cols}, count(*) FROM {rows} GROUP BY {cols} HAVING count(*) > 1"


def duplicates_left_sql(
    ctx: Context, table: str, columns: tuple[str, ...], among: str | None = None
) -> str:
    """A count that must be 0 before a repair commits (a unique index would then build):
    the duplicate groups of ``columns``, among the rows matching ``among`` if given (the
    active rows, for a partial index)."""
    where = f"{among} AND {ctx.not_null(columns)}" if among else ctx.not_null(columns)
    return f"SELECT count(*) FROM ({duplicate_groups_sql(ctx, table, columns, where)}) AS g"


def missing_values(ctx: Context, table: str, column: str, *, nulls: bool) -> str:
    """The predicate for rows without a value: ``''`` always (a value that collides), NULL
    when NULL is not SQL's "no value" here (NULLS NOT DISTINCT, or a stated key)."""
    q = ctx.q(column)
    col = ctx.catalog.tables[table].columns[column]
    parts = [f"{q} IS NULL"] if nulls else []
    if col.is_text:
        parts.append(f"{q} = ''")
    return " OR ".join(parts) or "1 = 0"


def backfill(ctx: Context, table: str, column: str, missing: str, *, hyphens: bool) -> list[Step]:
    """Give every row matching ``missing`` a fresh UUIDv4 spelled like the column's others."""
    t, q = ctx.t(table), ctx.q(column)
    col = ctx.catalog.tables[table].columns[column]
    value = ctx.dialect.new_uuid4_sql(uuid_type=col.is_uuid, hyphens=hyphens)
    steps = [
        Step(
            f"UPDATE {t} SET {q} = {value} WHERE {missing}",
            backup=backup_sql(ctx, table, missing),
        )
    ]
    if not ctx.catalog.tables[table].covered_by_unique(column):
        steps += add_unique_index(ctx, table, (column,))
    return steps


UUID_TEXT_LENGTH = 36


def too_short_for_uuid(ctx: Context, table: str, column: str) -> int | None:
    """The length limit of ``column`` when it cannot hold a hyphenated UUID (36 chars), else
    ``None``. A ``varchar(8)`` token column refuses the new values: the application's model
    must allow them too, so widening it is a change for a person, not for ``repair``."""
    limit = ctx.catalog.tables[table].columns[column].max_length
    if ctx.dialect.enforces_length and limit is not None and limit < UUID_TEXT_LENGTH:
        return limit
    return None


def token_migration_blocker(ctx: Context, table: str, column: str) -> str | None:
    """Why ``noclash repair`` must not migrate ``column``'s tokens itself, or ``None``.

    A column too short for a UUID refuses the new values; a column a foreign key references
    (Django's ``to_field``) either refuses the change (at once, or at COMMIT when deferred)
    or cascades it into the referencing rows, which the backup does not hold.
    """
    limit = too_short_for_uuid(ctx, table, column)
    if limit is not None:
        return (
            f"{column} holds at most {limit} characters, so the application's model must "
            f"allow a 36-character UUID before the migration (the fix widens the column)"
        )
    if column in ctx.catalog.tables[table].referenced:
        return (
            f"a foreign key references {table}.{column}, so new values would break or "
            f"cascade into the referencing rows: migrate them together, by hand"
        )
    return None


def legacy_column(column: str) -> str:
    """The column ``migrate-weak-tokens`` keeps ``column``'s old tokens in:
    ``<column>_legacy``, shortened (still ending in ``_legacy``) to fit PostgreSQL's
    identifier limit, so that the name the next plan looks for is the name it created."""
    return fit(column, "_legacy")


def migrate_weak_tokens(ctx: Context, table: str, column: str) -> list[Step]:
    """Keep weak tokens resolving in ``<column>_legacy`` and give the rows UUIDv4 tokens
    (after widening the column where its length limit would refuse them)."""
    tab = ctx.catalog.tables[table]
    legacy = legacy_column(column)
    t, q, ql = ctx.t(table), ctx.q(column), ctx.q(legacy)
    weak = f"{q} IS NOT NULL AND NOT {ctx.dialect.uuid_shaped_sql(q)}"
    value = ctx.dialect.new_uuid4_sql(uuid_type=False, hyphens=True)
    was_unique = tab.has_unique_on((column,))
    kind = "UNIQUE INDEX" if was_unique else "INDEX"
    steps = [] if legacy in tab.columns else [Step(f"ALTER TABLE {t} ADD COLUMN {ql} TEXT")]
    if too_short_for_uuid(ctx, table, column) is not None:
        steps.append(Step(f"ALTER TABLE {t} ALTER COLUMN {q} TYPE varchar({UUID_TEXT_LENGTH})"))
    steps.append(
        Step(
            f"UPDATE {t} SET {ql} = {q}, {q} = {value} WHERE {weak}",
            backup=backup_sql(ctx, table, weak),
        )
    )
    steps += [Step(s) for s in ctx.dialect.uuid_default_sql(ctx.conn, tab, column)]
    steps.append(
        Step(
            f"CREATE {kind}{ctx.dialect.concurrently()} IF NOT EXISTS "
            f"{ctx.q(index_name(ctx, table, (legacy,), unique=was_unique))} ON {t} ({ql})"
        )
    )
    if not was_unique:
        # Fresh UUIDv4 values are unique: say so with an index if the column had none.
        steps += add_unique_index(ctx, table, (column,))
    return steps


def reset_sequence(ctx: Context, seq: Sequence) -> list[Step]:
    """``setval`` to the largest value of every column the sequence feeds."""
    tops = [f"(SELECT max({ctx.q(c)}) FROM {ctx.t(t)})" for t, c in seq.users]
    top = tops[0] if len(tops) == 1 else f"GREATEST({', '.join(tops)})"
    return [
        Step(
            f"SELECT setval({literal(seq.name)}, {top})",
            backup=f"SELECT last_value, is_called FROM {seq.name}",
        )
    ]


__all__ = [
    "Step",
    "active_index_name",
    "activity_column",
    "add_unique_index",
    "backfill",
    "duplicate_groups_sql",
    "duplicates_left_sql",
    "index_name",
    "legacy_column",
    "migrate_weak_tokens",
    "missing_values",
    "partial_unique",
    "reset_sequence",
    "row_key",
    "statements",
    "suffix_duplicates",
    "token_migration_blocker",
    "too_short_for_uuid",
    "unique_index_name",
]
