"""Running the checks against a database: the library function behind ``noclash doctor``."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator

from sqlalchemy.engine import Connection, Engine

from noclash.doctor.catalog import Catalog
from noclash.doctor.connect import connection, display_url, open_engine, reading
from noclash.doctor.context import Context, Options
from noclash.doctor.dialects import DoctorDialect, doctor_dialect
from noclash.doctor.errors import DoctorError, UnsupportedSchema
from noclash.doctor.intent import KeySpec
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
    options = dataclasses.replace(options, keys=resolve_keys(catalog, dialect, options.keys))
    return Context(
        conn=conn, dialect=dialect, catalog=catalog, options=options, on_progress=on_progress
    )


def _spelled(typed: str, dialect: DoctorDialect) -> tuple[str, str]:
    """A typed name (``Slug``, ``"Slug"``, ``legacy.Pages``) as written without quotes, and
    as the engine reads it: each unquoted part folded to lower case on PostgreSQL, every
    part folded on SQLite (whose identifiers ignore case even when quoted)."""
    parts = []
    for part in typed.split("."):
        quoted = len(part) >= 2 and part[0] == part[-1] == '"'
        bare = part[1:-1].replace('""', '"') if quoted else part
        parts.append((bare, bare if quoted else bare.lower()))
    return ".".join(p[0] for p in parts), dialect.fold_name(".".join(p[1] for p in parts))


def _lookup(typed: str, names: Iterable[str], dialect: DoctorDialect) -> str | None:
    """The catalog's spelling of ``typed``: the name exactly as typed, else the one the engine
    would resolve it to (see :func:`_spelled`); ``None`` when there is none."""
    names = list(names)
    bare, folded = _spelled(typed, dialect)
    if bare in names:
        return bare
    hits = [n for n in names if dialect.fold_name(n) == folded]
    return hits[0] if len(hits) == 1 else None


def resolve_keys(
    catalog: Catalog, dialect: DoctorDialect, keys: tuple[KeySpec, ...]
) -> tuple[KeySpec, ...]:
    """Each ``--key`` with the catalog's spelling of its table and columns.

    SQLite compares identifiers without regard to case; PostgreSQL folds unquoted names to
    lower case (a name typed exactly as stored, ``Conversation``, matches as well). A table
    or column that does not exist is an error: a mistyped key must not pass silently.
    """
    out: list[KeySpec] = []
    unknown: list[str] = []
    for spec in keys:
        tname = _lookup(spec.table, catalog.tables, dialect)
        if tname is None:
            locked = _lookup(spec.table, [u.name for u in catalog.unreadable_tables], dialect)
            unknown.append(
                f"table {spec.table}" + (" (which this role may not read)" if locked else "")
            )
            continue
        table = catalog.tables[tname]
        columns = []
        for typed in spec.columns:
            cname = _lookup(typed, table.columns, dialect)
            if cname is None:
                unknown.append(f"column {tname}.{typed} (its columns: {', '.join(table.columns)})")
            columns.append(cname or typed)
        out.append(dataclasses.replace(spec, table=tname, columns=tuple(columns)))
    if unknown:
        raise DoctorError(f"--key names what does not exist: {'; '.join(unknown)}")
    return tuple(out)


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
    except ValueError as exc:  # a schema the SQL editing cannot parse: say so, no traceback
        raise UnsupportedSchema(f"cannot inspect this schema: {exc}") from exc
    finally:
        if isinstance(database, str):
            engine.dispose()
