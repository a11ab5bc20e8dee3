"""Alembic, driven from Python: ``noclash db upgrade`` and the serve-time auto-migration.

Runs are serialised across processes (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE``
on SQLite), so several noclash processes starting at once migrate exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from noclash.db.dialects import dialect_for
from noclash.db.engine import create_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_at_head(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def _run(engine: Engine, migrate: Callable[[Config], None]) -> None:
    """One transaction on the dialect's migration connection: lock, migrate, check, commit."""
    cfg = _config()
    dialect = dialect_for(engine)
    with dialect.migration_connection(engine) as conn, conn.begin():
        dialect.lock_for_migrations(conn)
        cfg.attributes["connection"] = conn
        migrate(cfg)
        dialect.check_migrated(conn)


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    _run(engine, lambda cfg: command.upgrade(cfg, revision))


def downgrade_engine(engine: Engine, revision: str) -> None:
    _run(engine, lambda cfg: command.downgrade(cfg, revision))


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: head)."""
    engine = create_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()
