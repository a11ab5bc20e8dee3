"""Which migration tool manages a schema, read from its bookkeeping table.

A repair made behind an ORM's back is undone or tripped over by the ORM's next migration
(Django, not knowing a partial unique index the repair built, drops or re-creates
constraints by its own model state). Knowing the tool lets a fix name its idiom and lets
``noclash repair --emit`` write the change as that tool's migration.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from noclash.doctor.catalog import Catalog, Orm
from noclash.doctor.connect import run_sql

# table -> (tool, query for its history as (key, value) rows: latest last)
_TOOLS: dict[str, tuple[str, str]] = {
    "django_migrations": ("django", "SELECT app, name FROM {t} ORDER BY id"),
    "alembic_version": ("alembic", "SELECT 'head', version_num FROM {t}"),
    "_prisma_migrations": (
        "prisma",
        "SELECT 'migration', migration_name FROM {t} WHERE finished_at IS NOT NULL "
        "ORDER BY finished_at, migration_name",
    ),
}

IDIOMS: dict[str, str] = {
    "django": (
        "Django manages this schema: declare it in the model (Meta.constraints = "
        "[models.UniqueConstraint(...)]) and let `noclash repair --emit django` write the "
        "migration (RunSQL with matching state_operations)"
    ),
    "alembic": (
        "Alembic manages this schema: make the change in a revision "
        "(`noclash repair --emit alembic` writes one on top of the current head) and in "
        "the SQLAlchemy metadata (Index(..., unique=True, postgresql_where=..., "
        "sqlite_where=...))"
    ),
    "prisma": (
        "Prisma manages this schema: put the SQL in a migration "
        "(`prisma migrate dev --create-only`, or `noclash repair --emit sql`) and change "
        "schema.prisma to match (@@unique cannot express a partial index: drop it there)"
    ),
}


def detect(conn: Connection, catalog: Catalog) -> Orm | None:
    """The first migration tool whose table is in ``catalog``, with its applied history."""
    for table, (tool, query) in _TOOLS.items():
        if table not in catalog.tables:
            continue
        q = conn.dialect.identifier_preparer.quote(table)
        rows = run_sql(conn, query.format(t=q)).all()
        return Orm(name=tool, table=table, history=tuple((str(k), str(v)) for k, v in rows))
    return None


def idiom(orm: Orm | None) -> str | None:
    return IDIOMS.get(orm.name) if orm else None


__all__ = ["IDIOMS", "detect", "idiom"]
