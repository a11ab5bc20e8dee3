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
from alembic.util import CommandError
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from noclash.db.dialects import dialect_for
from noclash.db.dialects.base import MigrationCheckFailed
from noclash.db.engine import create_engine, read_only
from noclash.db.tables import metadata

MIGRATIONS = Path(__file__).parent / "migrations"


class UnknownRevision(Exception):
    """The database is at a revision none of this noclash's migrations has: a newer
    noclash migrated it, or it is another application's Alembic database. Nothing can
    upgrade it (Alembic would fail with "Can't locate revision"), and serving it would
    run this version's queries on a schema it does not know."""

    def __init__(self, revision: str) -> None:
        super().__init__(
            f"the database is at revision {revision}, which this noclash does not know "
            "(a newer noclash, or another application's database)"
        )
        self.revision = revision


class ForeignTables(Exception):
    """The database has no noclash revision but already holds tables with the names of
    noclash's: another application's database (a mistyped URL), or a noclash database
    whose ``alembic_version`` was lost. The first migration would stop on the first
    such table with the driver's "relation \"chatbots\" already exists", which reads as
    a half-made noclash database whose tables could be dropped."""

    def __init__(self, tables: list[str]) -> None:
        super().__init__(
            "the database has no noclash revision (no alembic_version) but already holds "
            f"tables named as noclash's: {', '.join(tables)}; another application's "
            "database? Nothing was created: point --database-url / NOCLASH_DATABASE_URL "
            "at an empty database or at noclash's own"
        )
        self.tables = tables


class TargetBelowCurrent(Exception):
    """``db upgrade`` was given a revision older than the database's: an upgrade never
    goes down, and Alembic would do nothing and report success."""


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str | None:
    return _scripts().get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision as stored, known to this noclash or not (None: empty).

    A read, on a read-only connection: on SQLite a plain connection's transaction is a
    ``BEGIN IMMEDIATE``, so ``/readyz`` (which asks this on every probe) queued for the
    file's write lock behind every writer, and while another process held that lock it
    answered "database unreachable" after the whole busy timeout, though the server was
    reading and the lock's holder about to let go."""
    with read_only(engine).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _check_known(revision: str | None) -> str | None:
    if revision is not None:
        try:
            _scripts().get_revision(revision)
        except CommandError:
            raise UnknownRevision(revision) from None
    return revision


def is_known(revision: str) -> bool:
    """Whether this noclash has the migration ``revision`` (a newer noclash's is not)."""
    try:
        _check_known(revision)
    except UnknownRevision:
        return False
    return True


def known_revision(engine: Engine) -> str | None:
    """:func:`current_revision`, or :class:`UnknownRevision` for one this noclash lacks."""
    return _check_known(current_revision(engine))


def is_at_head(engine: Engine) -> bool:
    """Whether the database is at this noclash's newest migration; raises
    :class:`UnknownRevision` for a revision it does not know, which "run `noclash db
    upgrade` first" would not fix."""
    return known_revision(engine) == head_revision()


def _refuse_downgrade(current: str | None, target: str) -> None:
    """Raise :class:`TargetBelowCurrent` when ``target`` is an ancestor of ``current``."""
    if current is None:
        return
    scripts = _scripts()
    try:
        wanted = scripts.get_revision(target)
    except CommandError:
        return  # "head", relative or unknown targets: Alembic's own checks answer
    if wanted is None or wanted.revision == current:
        return
    below = {r.revision for r in scripts.iterate_revisions(current, "base")}
    if wanted.revision in below:
        raise TargetBelowCurrent(
            f"the database is at revision {current}, above {wanted.revision}: "
            "`noclash db upgrade` never goes down"
        )


def _stored_revision(conn: Connection) -> str | None:
    return _check_known(MigrationContext.configure(conn).get_current_revision())


def _nothing_to_run(current: str | None, target: str) -> bool:
    """Whether migrating from ``current`` to ``target`` runs no migration: the target is
    the revision the database is at ("head" on a database at the head, every start of
    `serve` on SQLite). A target this cannot resolve (relative, unknown) counts as work:
    Alembic's own checks answer it."""
    try:
        wanted = _scripts().get_revision(target)
    except CommandError:
        return False
    return (wanted.revision if wanted is not None else None) == current


def _refuse_foreign_tables(conn: Connection) -> None:
    """Raise :class:`ForeignTables` when a database without a revision already has a
    table the first migration creates (the one place it could collide)."""
    taken = sorted(set(inspect(conn).get_table_names()) & set(metadata.tables))
    if taken:
        raise ForeignTables(taken)


def _run(engine: Engine, target: str, migrate: Callable[[Config], None]) -> None:
    """One transaction on the dialect's migration connection: lock, check, migrate, check
    again, commit.

    The checks (:meth:`~noclash.db.dialects.base.Dialect.check_migrated`) judge what the
    migrations did, so they run only when a migration runs, and once before it too. A
    SQLite file is written with foreign keys off by anything but noclash (the sqlite3
    shell's default), so a chatbot deleted by hand leaves its connections and
    conversations pointing nowhere. Checked only after the run, that database refused
    every later `serve` (which migrates to head on each start, with nothing to run),
    saying "the migration would leave N rows ..." of a migration that changed nothing: the
    server could not start at all. Rows already broken before a migration are named as
    such, with nothing changed, since no check could then tell what the migration broke.
    """
    cfg = _config()
    dialect = dialect_for(engine)
    with dialect.migration_connection(engine) as conn, conn.begin():
        dialect.lock_for_migrations(conn)
        cfg.attributes["connection"] = conn
        current = _stored_revision(conn)
        if _nothing_to_run(current, target):
            migrate(cfg)  # Alembic's own no-op, and the refusals of the caller's checks
            return
        if current is None:
            _refuse_foreign_tables(conn)
        try:
            dialect.check_migrated(conn)
        except MigrationCheckFailed:
            raise MigrationCheckFailed(
                "nothing was migrated: the database already holds rows whose foreign keys "
                "point nowhere (written with foreign keys off, as the sqlite3 shell does; "
                "`PRAGMA foreign_key_check` lists them), so no migration could be checked: "
                "delete those rows, then migrate again"
            ) from None
        migrate(cfg)
        dialect.check_migrated(conn)


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    """Migrate to ``revision``; :class:`UnknownRevision` for a database at a revision this
    noclash does not know, :class:`TargetBelowCurrent` for a target below the database's."""

    def migrate(cfg: Config) -> None:
        _refuse_downgrade(_stored_revision(cfg.attributes["connection"]), revision)
        command.upgrade(cfg, revision)

    _run(engine, revision, migrate)


def downgrade_engine(engine: Engine, revision: str) -> None:
    def migrate(cfg: Config) -> None:
        _stored_revision(cfg.attributes["connection"])
        command.downgrade(cfg, revision)

    _run(engine, revision, migrate)


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: head)."""
    engine = create_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()
