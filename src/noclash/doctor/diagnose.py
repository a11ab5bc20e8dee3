"""Running the checks against a database: the library function behind ``noclash doctor``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from sqlalchemy.engine import Connection, Engine

from noclash.doctor.connect import connection, display_url, open_engine, reading
from noclash.doctor.context import Context, Options
from noclash.doctor.dialects import doctor_dialect
from noclash.doctor.errors import DoctorError
from noclash.doctor.model import Report
from noclash.doctor.orm import detect


def inspect(
    conn: Connection, options: Options, on_progress: Callable[[str], None] | None = None
) -> Context:
    """Read the catalog on ``conn`` and build the context every check shares."""
    dialect = doctor_dialect(conn)
    with reading("the catalog"):
        if conn.get_execution_options().get("noclash_readonly"):
            dialect.read_only(conn)
        dialect.prepare(conn)
        catalog = dialect.read_catalog(conn)
        catalog.orm = detect(conn, catalog)
    unknown = {k.table for k in options.keys} - set(catalog.tables)
    if unknown:
        raise DoctorError(f"--key names tables that do not exist: {', '.join(sorted(unknown))}")
    return Context(
        conn=conn, dialect=dialect, catalog=catalog, options=options, on_progress=on_progress
    )


@contextlib.contextmanager
def read_only_session(engine: Engine) -> Iterator[Connection]:
    """A connection in a read-only transaction that is rolled back at the end."""
    with connection(engine) as conn:
        ro = conn.execution_options(noclash_readonly=True)
        try:
            with ro.begin() as tx:
                yield ro
                tx.rollback()
        finally:
            if not ro.closed and not ro.invalidated:
                doctor_dialect(ro).end_read_only(ro)


def run_checks(ctx: Context, target: str) -> Report:
    from noclash.doctor.checks import CHECKS

    orm = ctx.catalog.orm.name if ctx.catalog.orm else None
    report = Report(tool="noclash doctor", target=target, dialect=ctx.dialect.name, orm=orm)
    unknown = set(ctx.options.exclude) - {c.ID for c in CHECKS}
    if unknown:
        raise DoctorError(f"--exclude names unknown checks: {', '.join(sorted(unknown))}")
    for check in CHECKS:
        if check.ID in ctx.options.exclude:
            continue
        ctx.step(check.ID)
        with reading(f"data for {check.ID}"):
            report.findings.extend(check.run(ctx))
        report.checks_run.append(check.ID)
    return report


def diagnose(
    database: str | Engine,
    options: Options | None = None,
    *,
    on_progress: Callable[[str], None] | None = None,
) -> Report:
    """Inspect ``database`` (URL or engine) and return every finding.

    Read-only: runs in one transaction that is rolled back. Raises
    :class:`~noclash.doctor.errors.DoctorError` when the database cannot be read.
    """
    options = options or Options()
    engine = open_engine(database) if isinstance(database, str) else database
    try:
        with read_only_session(engine) as conn:
            report = run_checks(inspect(conn, options, on_progress), display_url(engine))
        return report
    finally:
        if isinstance(database, str):
            engine.dispose()
