"""``noclash serve | worker | user | db | backup | doctor | repair | lint | bench``.

Each command parses its flags, calls one library function and formats the result; errors
become CLI errors (exit codes) only here, at the edge.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from noclash.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# Exit codes, the same for every command (docs/cli.md#exit-codes): 1, the command's own
# refusal (a user that exists, a backup file that exists, a database behind the head);
# 2, the database or the configuration cannot be used, as the doctor documents it.
EXIT_UNUSABLE = 2

# SQLite's busy timeout for `db upgrade`: the longest it takes (2**31 - 1 ms, 24 days),
# so that it waits behind another process's migration without a bound, as on PostgreSQL.
MIGRATION_BUSY_TIMEOUT_MS = 2**31 - 1

app = typer.Typer(
    help="noclash: chat backends where a duplicate key is never a 500.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from noclash import __version__

        typer.echo(f"noclash {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """noclash: chat backends where a duplicate key is never a 500."""


user_app = typer.Typer(help="Manage API users.", no_args_is_help=True)
db_app = typer.Typer(help="Migrate the database.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(db_app, name="db")

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", envvar="NOCLASH_DATABASE_URL", help="Database URL."),
]


def _settings(database_url: str | None) -> Settings:
    return Settings(database_url=database_url) if database_url else Settings()


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _open(
    database_url: str | None,
    *,
    must_exist: bool = True,
    at_head: bool = True,
    migrate_embedded: bool = False,
    migrating: bool = False,
) -> Engine:
    """An engine on the configured database, connected once, for a command that works on
    noclash's tables. ``must_exist``: a SQLite path that does not exist is an error, not
    a new empty database (a typo must not list, or back up, a stray file). ``at_head``: a
    database that is not migrated is refused with what to run, before a query fails on a
    missing table; :func:`~noclash.db.migrate.is_at_head` also refuses a revision this
    noclash does not know. ``migrate_embedded``: an embedded database (SQLite, which
    `serve` creates and migrates itself) is migrated here instead, so `user create` can
    make the administrator before the first start. ``migrating``: SQLite's writers wait
    for the write lock without a bound (:data:`MIGRATION_BUSY_TIMEOUT_MS`), since another
    process's migration holds it for as long as it runs (0009 rebuilds ``events``: a
    minute or more on a few million), and giving up after
    ``NOCLASH_SQLITE_BUSY_TIMEOUT_MS`` failed the second of two upgrades started at once.
    Failures raise; :func:`main` turns them into one line."""
    from noclash.db.dialects import dialect_for
    from noclash.db.engine import open_engine
    from noclash.db.migrate import is_at_head

    settings = _settings(database_url)
    if migrating:
        settings = settings.model_copy(update={"sqlite_busy_timeout_ms": MIGRATION_BUSY_TIMEOUT_MS})
    engine = open_engine(settings.sqlalchemy_url, settings, must_exist=must_exist)
    try:
        if migrate_embedded and dialect_for(engine).embedded:
            if not is_at_head(engine):
                _migrate(database_url)
        elif at_head and not is_at_head(engine):
            _refuse_unmigrated()
    except BaseException:
        engine.dispose()
        raise
    return engine


def _migrate(database_url: str | None) -> None:
    """Migrate to the head through an engine of its own that waits for the write lock as
    long as another process's migration holds it (``migrating``): a second `serve` (or a
    `user create`) started beside one migrating a large SQLite file waits for it, where
    the serving engine's busy timeout gave up (exit 2, "database is locked"). Callers ask
    first whether the database is at the head already (a read, which takes no write
    lock): a database at the head never waits here for a lock held by anything else."""
    from noclash.db.migrate import upgrade_engine

    migrator = _open(database_url, must_exist=False, at_head=False, migrating=True)
    try:
        upgrade_engine(migrator)
    finally:
        migrator.dispose()


def _refuse_unmigrated() -> NoReturn:
    _err("the database is not at the latest migration: run `noclash db upgrade` first")
    raise typer.Exit(EXIT_UNUSABLE)


def _setting_errors(exc: Any) -> str:
    """A pydantic ValidationError of :class:`Settings` as one line naming each variable."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        reason = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"NOCLASH_{field.upper()}={error.get('input')!r}: {reason}")
    return "invalid setting " + "; ".join(parts)


def _unusable(exc: BaseException) -> str | None:
    """One line for an error that says the database or the configuration cannot be used
    (exit 2), rather than a bug; None for anything else, whose traceback is wanted."""
    from alembic.util import CommandError
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError

    from noclash.db.dialects.base import (
        DatabaseUnavailable,
        MigrationCheckFailed,
        UnsupportedDialect,
        driver_message,
    )
    from noclash.db.migrate import ForeignTables, TargetBelowCurrent, UnknownRevision

    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        return _setting_errors(exc)
    if isinstance(exc, DBAPIError):
        # The driver's words only: SQLAlchemy's text adds the SQL and its parameters.
        return f"database error: {driver_message(exc)}"
    if isinstance(exc, UnsupportedDialect):
        return f"the database URL (--database-url, NOCLASH_DATABASE_URL) cannot be used: {exc}"
    if isinstance(exc, (DatabaseUnavailable, MigrationCheckFailed, UnknownRevision,
                        TargetBelowCurrent, ForeignTables, CommandError)):  # fmt: skip
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return None


def worker_app() -> object:
    """The app of one ``serve --workers`` process, built from the environment (uvicorn
    imports it by name in each worker; ``serve`` has put its options there)."""
    from noclash.api.app import create_app

    _quiet_http_clients()
    settings = Settings()
    return with_dispatcher(create_app(settings), settings)


def with_dispatcher(app: Any, settings: Settings) -> Any:
    """Run a dispatcher beside ``app`` while it serves (its lifespan), unless
    ``NOCLASH_DISPATCHER=off``. It listens on the app's hub, which wakes it after every
    commit that queued a delivery; the API itself knows nothing of dispatchers."""
    if not settings.dispatcher:
        return app
    import asyncio
    from contextlib import asynccontextmanager

    from noclash.dispatch import Dispatcher

    # The app's hub: what the dispatcher records wakes this process's streams at once,
    # and (PostgreSQL) the others' through the hub's coalesced NOTIFY.
    dispatcher = Dispatcher(app.state.engine, settings, hub=app.state.hub)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> Any:
        async with inner(app_) as state:
            task = asyncio.create_task(dispatcher.run())
            try:
                yield state
            finally:
                dispatcher.stop()
                await task

    app.router.lifespan_context = lifespan
    return app


@contextmanager
def _stop_gracefully() -> Iterator[None]:
    """SIGTERM and SIGHUP stop ``serve`` as SIGINT does: requests finish, then the database
    is settled and the process exits 0.

    uvicorn catches SIGTERM and SIGINT while it serves and shuts down gracefully, but then
    restores the previous handlers and raises the signal again. For SIGINT that is
    KeyboardInterrupt, which uvicorn.run swallows; SIGTERM's default handler would kill the
    process before ``settle`` runs, leaving committed rows only in SQLite's WAL. So SIGTERM
    raises KeyboardInterrupt here, and SIGHUP (a closed terminal, a process manager's
    stop) is turned into SIGTERM, which uvicorn's handler takes while it serves.
    """
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    def as_term(_signum: int, _frame: object) -> None:
        signal.raise_signal(signal.SIGTERM)

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, interrupt),
        signal.SIGHUP: signal.signal(signal.SIGHUP, as_term),
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="NOCLASH_HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="NOCLASH_PORT", help="TCP port.", min=1, max=65535)
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes (each a full, stateless noclash; they share the database).",
            min=1,
            max=64,
        ),
    ] = 1,
    database_url: DatabaseOption = None,
    migrate: Annotated[
        bool | None,
        typer.Option(
            "--migrate/--no-migrate",
            help="Migrate to head before serving (default: on for SQLite, off otherwise).",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API and the channel webhooks, and send replies.

    Each process runs a dispatcher that sends queued replies to the platforms and wakes
    snoozed conversations; NOCLASH_DISPATCHER=off leaves that to `noclash worker`.

    On an empty database (no user yet) it creates the admin admin@localhost and prints its
    API token once, on stdout; `noclash user rotate-token admin@localhost` replaces a lost
    one.

    SIGINT, SIGTERM and SIGHUP stop it gracefully (exit 0); with --workers, SIGHUP
    restarts the worker processes instead.
    """
    import os

    import uvicorn

    from noclash.api.app import create_app
    from noclash.chat.users import bootstrap_admin
    from noclash.db.dialects import dialect_for
    from noclash.db.migrate import is_at_head
    from noclash.serving import uvicorn_options

    settings = _settings(database_url)
    engine = _open(database_url, must_exist=False, at_head=False)
    dialect = dialect_for(engine)
    if migrate if migrate is not None else dialect.embedded:
        if not is_at_head(engine):
            _migrate(database_url)
    elif not is_at_head(engine):
        _refuse_unmigrated()
    created = bootstrap_admin(engine)
    if created is not None:
        email, token = created
        _err(f"Created the admin {email}. Its API token (shown once):")
        typer.echo(token)
        sys.stdout.flush()
    bounds = uvicorn_options()  # the connection bounds, the same in every worker
    _quiet_http_clients()  # uvicorn configures its own loggers and noclash's, not these
    with _stop_gracefully():
        try:
            if workers == 1:
                app = with_dispatcher(create_app(settings, engine=engine), settings)
                uvicorn.run(app, host=host, port=port, log_level="info", **bounds)
            else:
                # uvicorn's supervisor takes the signals itself: SIGINT and SIGTERM stop the
                # workers gracefully, SIGHUP restarts them one by one (docs/deployment.md).
                engine.dispose()  # each worker opens its own pool
                os.environ["NOCLASH_DATABASE_URL"] = settings.database_url
                uvicorn.run(
                    "noclash.cli:worker_app", factory=True, host=host, port=port,
                    workers=workers, log_level="info", **bounds,
                )  # fmt: skip
        finally:
            dialect.settle(engine)


def _log_to_stderr() -> None:
    """noclash's own loggers at INFO on stderr, and nothing else below WARNING.

    Not ``logging.basicConfig(level=INFO)``: that sets the root logger, and httpx logs
    every request at INFO with its full URL, which for Telegram holds the bot's token
    (``/bot<token>/sendMessage``) and for webhooks whatever secret their URL carries.
    """
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
    own = logging.getLogger("noclash")
    own.addHandler(handler)
    own.setLevel(logging.INFO)
    own.propagate = False
    _quiet_http_clients()


def _quiet_http_clients() -> None:
    """httpx and httpcore at WARNING whatever the root logger's level: their INFO and
    DEBUG records carry full request URLs, and a Telegram URL holds the bot's token."""
    import logging

    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


@app.command()
def worker(database_url: DatabaseOption = None) -> None:
    """Run a dispatcher alone: send queued replies and wake snoozes, serve no HTTP.

    For deployments that scale senders apart from the API (serve with
    NOCLASH_DISPATCHER=off). Any number of workers and serve processes share one
    database; they claim disjoint deliveries. SIGINT, SIGTERM or SIGHUP stops it cleanly:
    sends in flight finish, claims not yet sent are given back.
    """
    import asyncio
    import signal

    from noclash.chat.wakeups import Hub
    from noclash.db.dialects import dialect_for
    from noclash.dispatch import Dispatcher

    settings = _settings(database_url)
    engine = _open(database_url)
    # No streams here: the hub only sends the NOTIFY that wakes the serving processes'.
    hub = Hub(engine, notify=settings.events_notify)
    dispatcher = Dispatcher(engine, settings, name="worker", hub=hub)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, dispatcher.stop)
        await dispatcher.run()

    _log_to_stderr()
    _err("noclash worker: sending queued replies (Ctrl+C to stop)")
    try:
        asyncio.run(run())
    finally:
        hub.close()
        dialect_for(engine).settle(engine)
        engine.dispose()


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Argument(help="The user's e-mail address.")],
    admin: Annotated[bool, typer.Option(help="Make the user an administrator.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Create a user and print its API token, and only it, on stdout. On an embedded
    database (SQLite) that does not exist yet, it is created and migrated first, as
    `serve` would, so the administrator can be made before the first start."""
    from noclash.chat.users import InvalidEmail, create_user
    from noclash.unique import UniqueViolation

    engine = _open(database_url, must_exist=False, migrate_embedded=True)
    try:
        _user, token = create_user(engine, email, is_admin=admin)
    except UniqueViolation:
        _err(f"a user with the e-mail {email} already exists")
        raise typer.Exit(1) from None
    except InvalidEmail as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(token)


@user_app.command("list")
def user_list(database_url: DatabaseOption = None) -> None:
    """List users: e-mail, admin, created, and whether the token is revoked (never tokens).

    A table on a terminal; tab-separated lines, one per user, when stdout is a pipe or a
    file. Nothing is ever shortened: an e-mail cut with "..." names no one.
    """
    from rich.console import Console
    from rich.table import Table

    from noclash.chat.users import list_users

    engine = _open(database_url)
    try:
        accounts = list_users(engine)
    finally:
        engine.dispose()
    header = ("email", "admin", "created", "token", "id")
    rows = [
        (
            a.email,
            "yes" if a.is_admin else "",
            f"{a.created_at:%Y-%m-%d %H:%M}",
            f"revoked {a.token_revoked_at:%Y-%m-%d %H:%M}" if a.token_revoked_at else "active",
            str(a.id),
        )
        for a in accounts
    ]
    if not sys.stdout.isatty():
        for row in (header, *rows):
            typer.echo("\t".join(row))
        return
    table = Table(box=None, header_style="bold")
    for name in header:
        table.add_column(name, overflow="fold")  # wraps a long value, never cuts it
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _change_token(email: str, database_url: str | None, *, revoke: bool) -> str | None:
    from noclash.chat.users import InvalidEmail, UnknownUser, revoke_token, rotate_token

    engine = _open(database_url)
    try:
        if revoke:
            revoke_token(engine, email)
            return None
        return rotate_token(engine, email)
    except (UnknownUser, InvalidEmail) as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


@user_app.command("rotate-token")
def user_rotate_token(
    email: Annotated[str, typer.Argument(help="The user's e-mail address.")],
    database_url: DatabaseOption = None,
) -> None:
    """Give a user a new API token and print it, and only it; the old one stops working."""
    typer.echo(_change_token(email, database_url, revoke=False))


@user_app.command("revoke")
def user_revoke(
    email: Annotated[str, typer.Argument(help="The user's e-mail address.")],
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a user's API token (its records stay); rotate-token issues a new one."""
    _change_token(email, database_url, revoke=True)
    _err(f"the API token of {email} is revoked (processes that verified it in the last "
         "NOCLASH_AUTH_CACHE_SECONDS may accept it until then)")  # fmt: skip


@app.command()
def backup(
    path: Annotated[Path, typer.Argument(help="File to write (it must not exist).")],
    database_url: DatabaseOption = None,
) -> None:
    """Write a consistent copy of the database to PATH while the server keeps running.

    The database must exist and be noclash's. The copy is written beside PATH under a
    temporary name and renamed when complete: a failed backup leaves nothing at PATH.
    """
    from noclash.db.dialects import dialect_for
    from noclash.db.dialects.base import BackupFailed, BackupNotSupported, BackupTargetExists
    from noclash.db.migrate import current_revision

    if path.exists():
        _err(f"{path} exists: choose a new file (a backup never overwrites)")
        raise typer.Exit(1)
    engine = _open(database_url, at_head=False)
    try:
        if current_revision(engine) is None:
            _err("the database has no alembic_version table: it is not a noclash database "
                 "(check --database-url / NOCLASH_DATABASE_URL); nothing was written")  # fmt: skip
            raise typer.Exit(EXIT_UNUSABLE)
        dialect_for(engine).backup(engine, str(path))
    except BackupNotSupported as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_UNUSABLE) from None
    except BackupTargetExists:
        _err(f"{path} exists: choose a new file (a backup never overwrites)")
        raise typer.Exit(1) from None
    except BackupFailed as exc:
        _err(f"{exc}; nothing was left at {path}")
        raise typer.Exit(EXIT_UNUSABLE) from None
    except OSError as exc:  # its directory is missing or read-only, the disk is full
        _err(f"cannot write {path}: {exc.strerror or exc}; nothing was left there")
        raise typer.Exit(EXIT_UNUSABLE) from None
    finally:
        engine.dispose()
    _err(f"backed up to {path}")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseOption = None,
) -> None:
    """Migrate the database to REVISION (default: head).

    It never goes down: a REVISION below the database's is refused (exit 2). Started while
    another process migrates, it waits for that migration, however long, then migrates
    what is left (often nothing).
    """
    from noclash.db.migrate import current_revision, upgrade_engine

    engine = _open(database_url, must_exist=False, at_head=False, migrating=True)
    try:
        upgrade_engine(engine, revision)
        _err(f"database at revision {current_revision(engine)}")
    finally:
        engine.dispose()


@db_app.command("current")
def db_current(database_url: DatabaseOption = None) -> None:
    """Print the database's revision and whether it is the head.

    Exit code 0: at the head; 1: behind it (run `noclash db upgrade`); 2: the database
    cannot be opened, or is at a revision this noclash does not know.
    """
    from noclash.db.migrate import head_revision, known_revision

    engine = _open(database_url, at_head=False)
    try:
        current, head = known_revision(engine), head_revision()
    finally:
        engine.dispose()
    typer.echo(f"{current or 'empty'} (head: {head})")
    if current != head:
        raise typer.Exit(1)


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="Smoke size: every scenario in seconds.")] = False,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json", envvar="NOCLASH_BENCH_JSON", help="Also write the results as JSON here."
        ),
    ] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only this scenario (repeatable): tokens, slugs, active, http, stream, "
            "events, outbound."
        ),
    ] = None,
    writers: Annotated[
        list[int] | None,
        typer.Option(help="Concurrent writers (repeatable); default 1 and 32."),
    ] = None,
) -> None:
    """Benchmark noclash against the seeds' fixes, a bare INSERT and bare sends (needs the
    checkout)."""
    import noclash

    package = Path(noclash.__file__).resolve().parent
    root = next((p for p in package.parents if (p / "bench" / "__init__.py").is_file()), None)
    if root is None:
        _err("noclash bench needs the source checkout (its bench/ package was not found)")
        raise typer.Exit(2)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.runner import main as run_bench

    code = run_bench(quick=quick, json_path=json_path, scenarios=scenario, writers=writers)
    if code:
        raise typer.Exit(code)


def _register_plugins() -> None:
    from noclash.doctor.commands import register as register_doctor

    register_doctor(app)


_register_plugins()


def main() -> None:
    """The ``noclash`` command. The edge where errors become exit codes: a database or a
    setting that cannot be used is one line on stderr and exit 2, never a traceback."""
    try:
        app()
    except Exception as exc:
        message = _unusable(exc)
        if message is None:
            raise
        _err(message)
        sys.exit(EXIT_UNUSABLE)
