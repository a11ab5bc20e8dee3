"""Running the checks against a database: the library function behind ``noclash doctor``."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection, Engine

from noclash.doctor.connect import connection, display_url, open_engine, reading
from noclash.doctor.context import Context, Options
from noclash.doctor.dialects import doctor_dialect
from noclash.doctor.errors import DoctorError
from noclash.doctor.model import Report


def inspect(
    conn: Connection, options: Options, on_progress: Callable[[str], None] | None = None
) -> Context:
    """Read the catalog on ``conn`` and build the context every check shares."""
    dialect = doctor_dialect(conn)
    with reading("the catalog"):
        dialect.prepare(conn)
        catalog = dialect.read_catalog(conn)
    unknown = {k.table for k in options.keys} - set(catalog.tables)
    if unknown:
        raise DoctorError(f"--key names tables that do not exist: {', '.join(sorted(unknown))}")
    return Context(
        conn=conn, dialect=dialect, catalog=catalog, options=options, on_progress=on_progress
    )


def run_checks(ctx: Context, target: str) -> Report:
    from noclash.doctor.checks import CHECKS

    report = Report(tool="noclash doctor", target=target, dialect=ctx.dialect.name)
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
        with connection(engine) as conn:
            conn = conn.execution_options(noclash_readonly=True)
            with conn.begin() as tx:
                ctx = inspect(conn, options, on_progress)
                report = run_checks(ctx, display_url(engine))
                tx.rollback()
        return report
    finally:
        if isinstance(database, str):
            engine.dispose()
