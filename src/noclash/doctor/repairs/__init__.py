"""``noclash repair``: plan and apply the fixes for the doctor's findings.

Contract of every repair (one module each, named after its id):

- ``plan(ctx, finding) -> Action | None``: what it would do, from a read-only context:
  the statements (built in :mod:`noclash.doctor.fixes`, the same SQL the finding
  suggests), the locks, the columns it changes and the schema changes an ORM must learn
  about; ``None`` when the finding needs a human (a repair runs only where it is certain).
- The runner executes exactly those statements: each data change after saving the rows it
  reads first (:class:`~noclash.doctor.fixes.Step.backup`), in one transaction that also
  checks the action's guard and the engine's integrity (SQLite's foreign keys); statements
  that cannot run in a transaction block run after it commits.

The runner then re-runs the doctor and requires the finding to be gone (the
post-condition); a repair whose finding is gone is never planned again, so a second
``repair --apply`` changes nothing. Error findings that remain are returned, so the CLI
can exit 1 naming them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from noclash.doctor.connect import (
    cannot_read,
    connection,
    display_url,
    first_line,
    open_engine,
    run_sql,
)
from noclash.doctor.context import Context, Options
from noclash.doctor.diagnose import inspect, read_only_session, run_checks
from noclash.doctor.errors import CannotRead, DoctorError, RepairFailed, UnsupportedSchema
from noclash.doctor.fixes import Step
from noclash.doctor.model import Finding, Report, Severity
from noclash.doctor.repairs.backup import Backup


@dataclass(frozen=True)
class SchemaChange:
    """A change to the schema an ORM's model must also learn (for ``--emit``).

    ``kind``: ``add_unique`` (``name`` over ``columns``, partial when ``state_column`` and
    ``states`` are set), ``drop_unique`` (the index or constraint ``name``), or
    ``add_column`` (``columns[0]``, nullable text).
    """

    kind: str
    table: str
    name: str
    columns: tuple[str, ...]
    state_column: str | None = None
    states: tuple[str, ...] = ()
    constraint: bool = False


@dataclass
class Action:
    """One planned repair, of one finding.

    The action answers for its finding's check, table and columns: the runner re-plans it
    by them, verifies it by looking for a finding with the same three (:func:`_verify`), and
    reports the error findings no action answers for as left to a human.
    """

    repair: str
    finding: Finding = field(repr=False)
    summary: str
    locks: str
    steps: list[Step] = field(repr=False)
    # Columns of ``table`` whose values it changes (every other column keeps its values).
    changes: tuple[str, ...] = ()
    # A SELECT count(*) that must be 0 before the transaction commits.
    guard: str | None = field(default=None, repr=False)
    schema: list[SchemaChange] = field(default_factory=list, repr=False)
    changed_rows: int = 0
    # User triggers its UPDATEs fire (set by :func:`plan_for`): they run in its transaction,
    # and what they write elsewhere is not in the backup.
    triggers: tuple[str, ...] = ()

    @property
    def check(self) -> str:
        return self.finding.check

    @property
    def table(self) -> str:
        return self.finding.table or ""

    @property
    def columns(self) -> tuple[str, ...]:
        return self.finding.columns

    @property
    def statements(self) -> list[str]:
        return [s.sql for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": list(self.changes),
            "check": self.check,
            "columns": list(self.columns),
            "locks": self.locks,
            "repair": self.repair,
            "statements": self.statements,
            "summary": self.summary,
            "table": self.table,
            "triggers": list(self.triggers),
        }


@dataclass
class RepairResult:
    actions: list[Action]
    applied: bool
    backup_rows: int = 0
    remaining: Report | None = None
    # Findings at error level that no automatic repair addresses: for a human.
    manual: list[Finding] = field(default_factory=list)
    orm: str | None = None
    # What the migration tool's table says was applied last (for --emit).
    history: tuple[tuple[str, str], ...] = ()
    target: str = ""

    @property
    def unfixed(self) -> list[Finding]:
        """Error findings left after ``--apply`` (what makes ``repair --apply`` exit 1)."""
        if self.remaining is None:
            return []
        return [f for f in self.remaining.sorted() if f.severity is Severity.ERROR]


def _modules() -> dict[str, ModuleType]:
    from noclash.doctor.repairs import (
        add_unique_index,
        backfill_keys,
        migrate_weak_tokens,
        partial_unique,
        reset_sequence,
        suffix_duplicates,
    )

    mods = (
        backfill_keys,
        migrate_weak_tokens,
        suffix_duplicates,
        add_unique_index,
        partial_unique,
        reset_sequence,
    )
    return {m.ID: m for m in mods}


def repair_ids() -> list[str]:
    return list(_modules())


def plan_for(ctx: Context, report: Report) -> list[Action]:
    """Actions for every finding that has an automatic repair, in a safe order."""
    modules = _modules()
    order = list(modules)
    actions: list[Action] = []
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    for f in sorted(
        report.findings,
        key=lambda f: (order.index(f.fix.repair) if f.fix.repair in modules else 99, f.sort_key()),
    ):
        if f.fix.repair not in modules:
            continue
        key = (f.fix.repair, f.table or "", f.columns)
        if key in seen:
            continue
        seen.add(key)
        action = modules[f.fix.repair].plan(ctx, f)
        if (
            action is not None
            and not _builds_on_partitioned(ctx, action)
            and not _writes_generated(ctx, action)
            and not _on_virtual_table(ctx, action)
        ):
            action.triggers = _firing_triggers(ctx, action)
            actions.append(action)
    return actions


def _firing_triggers(ctx: Context, action: Action) -> tuple[str, ...]:
    """The user triggers that fire on the rows ``action`` updates.

    They run inside the repair's transaction (an audit trigger writes a row per changed
    row into another table), and nothing they write is in the backup, so the plan names
    them. Only UPDATE triggers: a repair inserts and deletes no rows (SQLite's rebuild
    copies into a new table that has no triggers yet, and drops the old one with foreign
    keys off, which fires none).
    """
    table = ctx.catalog.tables.get(action.table)
    if table is None or not action.changes or not any(s.backup for s in action.steps):
        return ()
    return tuple(t.name for t in table.triggers if "UPDATE" in t.events)


def _writes_generated(ctx: Context, action: Action) -> bool:
    """Whether ``action`` would write a generated column (``GENERATED ALWAYS AS``): the
    database refuses that, and the right fix is to the values the expression reads, which
    only a person can choose. Such a finding (a unique ``email_key AS (lower(email))`` that
    holds ``''``) is left to a person."""
    table = ctx.catalog.tables.get(action.table)
    if table is None:
        return False
    return any(table.columns[c].generated for c in action.changes if c in table.columns)


def _on_virtual_table(ctx: Context, action: Action) -> bool:
    """Whether ``action`` works on a SQLite virtual table (a ``--key`` stated on an FTS
    table), where no index can be built: the plan offered a repair whose ``CREATE UNIQUE
    INDEX`` then failed every ``--apply`` ("virtual tables may not be indexed"). Such a
    finding is left to a person."""
    table = ctx.catalog.tables.get(action.table)
    return table is not None and table.virtual


def _builds_on_partitioned(ctx: Context, action: Action) -> bool:
    """Whether ``action`` builds an index CONCURRENTLY on a partitioned table: PostgreSQL
    refuses that (and a unique index there must include the partition key), and the build
    runs after the data change commits, so the run stopped half done (a weak-token
    migration left its legacy column without an index and the next run saw nothing to do).
    Such a finding is left to a person."""
    table = ctx.catalog.tables.get(action.table)
    return table is not None and table.partitioned and any(s.concurrent for s in action.steps)


def repair(
    database: str | Engine,
    options: Options | None = None,
    *,
    apply: bool = False,
    backup_dir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> RepairResult:
    """Plan (and with ``apply``, execute and verify) the repairs for ``database``."""
    options = options or Options()
    progress = on_progress or (lambda _m: None)
    engine = open_engine(database) if isinstance(database, str) else database
    target = display_url(engine)
    try:
        with read_only_session(engine) as ro:
            ctx = inspect(ro, options, on_progress)
            report = run_checks(ctx, target)
            actions = plan_for(ctx, report)
        planned_keys = {(a.check, a.table, a.columns) for a in actions}
        manual = [
            f
            for f in report.sorted()
            if f.severity is Severity.ERROR and (f.check, f.table, f.columns) not in planned_keys
        ]
        result = RepairResult(
            actions=actions,
            applied=apply,
            manual=manual,
            orm=report.orm,
            history=ctx.catalog.orm.history if ctx.catalog.orm else (),
            target=target,
        )
        if not apply:
            return result
        backup = Backup(
            run_id=datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
            directory=backup_dir,
        )
        for planned in actions:
            progress(f"{planned.repair} on {planned.table}")
            _apply_one(engine, options, planned, target, backup, progress)
            _verify(engine, options, planned, target)
        with read_only_session(engine) as ro:
            result.remaining = run_checks(inspect(ro, options, None), target)
        result.backup_rows = backup.saved
        return result
    except ValueError as exc:  # a schema the SQL editing cannot parse: say so, no traceback
        raise UnsupportedSchema(f"cannot plan a repair for this schema: {exc}") from exc
    except sa.exc.DBAPIError as exc:
        raise CannotRead(cannot_read(target, exc)) from exc
    finally:
        if isinstance(database, str):
            engine.dispose()


def _apply_one(
    engine: Engine,
    options: Options,
    planned: Action,
    target: str,
    backup: Backup,
    progress: Callable[[str], None],
) -> None:
    """Run one action: re-planned on a fresh catalog, in its own transaction."""
    with connection(engine) as conn:
        with conn.begin() as tx:
            ctx = inspect(conn, options, None)
            fresh = [
                a
                for a in plan_for(ctx, run_checks(ctx, target))
                if (a.repair, a.table, a.columns)
                == (planned.repair, planned.table, planned.columns)
            ]
            if not fresh:
                return  # already fixed (by an earlier action or another process)
            action = fresh[0]
            first_concurrent = next(
                (i for i, s in enumerate(action.steps) if s.concurrent), len(action.steps)
            )
            now, later = action.steps[:first_concurrent], action.steps[first_concurrent:]
            integrity_before = set(ctx.dialect.verify_integrity(conn))
            try:
                planned.changed_rows = _run_steps(conn, action, now, backup, progress)
                if action.guard and run_sql(conn, action.guard).scalar():
                    raise RepairFailed(
                        f"{action.repair} on {action.table}: duplicates remain, so the "
                        f"unique index cannot be built; rolled back",
                        action=action.repair,
                        table=action.table,
                    )
                broken = set(ctx.dialect.verify_integrity(conn)) - integrity_before
                if broken:
                    raise RepairFailed(
                        f"{action.repair} on {action.table} broke integrity and was rolled "
                        f"back: {sorted(broken)[0]}",
                        action=action.repair,
                        table=action.table,
                    )
                # Inside the try: a deferred constraint (or constraint trigger) refuses the
                # change only now, and the transaction is rolled back like any other
                # failure (it was reported as "cannot read", exit 2).
                tx.commit()
            except DoctorError:
                raise  # the transaction is rolled back on the way out
            except Exception as exc:
                orig = getattr(exc, "orig", None) or exc
                raise RepairFailed(
                    f"{planned.repair} on {planned.table} failed and was rolled back: "
                    f"{str(orig).strip().splitlines()[0]}",
                    action=planned.repair,
                    table=planned.table,
                ) from exc
        if later:
            _run_outside_transaction(conn, [s.sql for s in later], action, progress)


def _run_steps(
    conn: Connection,
    action: Action,
    steps: list[Step],
    backup: Backup,
    progress: Callable[[str], None],
) -> int:
    """Execute ``steps`` in the open transaction, backing up first; the rows changed."""
    changed = 0
    for step in steps:
        progress(step.sql[:120])
        if step.backup:
            _back_up(conn, step.backup, action, backup, progress)
        result = run_sql(conn, step.sql)
        if step.backup and result.rowcount and result.rowcount > 0:
            changed += result.rowcount
    return changed


# Rows read and saved per round trip of a backup: the memory a backup needs, whatever the
# size of the table.
BACKUP_BATCH = 5000


def _back_up(
    conn: Connection,
    select: str,
    action: Action,
    backup: Backup,
    progress: Callable[[str], None],
) -> None:
    """Copy the rows ``select`` reads into ``backup``, :data:`BACKUP_BATCH` at a time.

    The rows were all fetched into one list first: a repair of 500,000 rows of a table took
    nearly 1 GB of memory before its UPDATE ran, so a table ten times that size could not be
    repaired at all. The SELECT is streamed (a server-side cursor on PostgreSQL, SQLite's own
    cursor) and each batch is saved before the next is read; the backup is still written in
    the repair's transaction, before the change.
    """
    result = conn.exec_driver_sql(
        select, execution_options={"no_parameters": True, "yield_per": BACKUP_BATCH}
    )
    saved = 0
    for batch in result.mappings().partitions(BACKUP_BATCH):
        backup.save(conn, action.repair, action.table, [dict(r) for r in batch])
        saved += len(batch)
        progress(f"backed up {saved} rows of {action.table}")


def _run_outside_transaction(
    conn: Connection, statements: list[str], action: Action, progress: Callable[[str], None]
) -> None:
    """Run CONCURRENTLY statements (and those after them) in autocommit mode.

    A failed concurrent build leaves an invalid index behind (which still slows writes and,
    once ready, may enforce): drop it so the database is as it was before the statement.
    """
    auto = conn.execution_options(isolation_level="AUTOCOMMIT")
    for stmt in statements:
        progress(stmt)
        try:
            run_sql(auto, stmt)
        except sa.exc.DBAPIError as exc:
            if m := _CONCURRENT_BUILD.match(stmt):
                run_sql(auto, f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(m, action)}")
            raise RepairFailed(
                f"{action.repair} on {action.table}: {stmt} failed: {first_line(exc)}",
                action=action.repair,
                table=action.table,
            ) from exc


_CONCURRENT_BUILD = re.compile(
    r"^CREATE (?:UNIQUE )?INDEX CONCURRENTLY (?:IF NOT EXISTS )?(\S+)", re.I
)


def _qualified(m: re.Match[str], action: Action) -> str:
    name = m.group(1)
    schema = action.table.rpartition(".")[0]
    if schema and "." not in name:
        name = f'"{schema}".{name}'
    return name


def _verify(engine: Engine, options: Options, action: Action, target: str) -> None:
    """The post-condition: the finding this action addressed is gone, and every unique key
    the action builds is enforced by a valid unique index (or constraint) on those columns:
    a ``CREATE UNIQUE INDEX IF NOT EXISTS`` that quietly did nothing is a failure."""
    with read_only_session(engine) as ro:
        ctx = inspect(ro, options, None)
        report = run_checks(ctx, target)
        left: list[Finding] = [
            f
            for f in report.findings
            if f.check == action.check and f.table == action.table and f.columns == action.columns
        ]
        if left:
            raise RepairFailed(
                f"{action.repair} on {action.table} did not fix it: {left[0].message}",
                action=action.repair,
                table=action.table,
            )
        for change in action.schema:
            if change.kind != "add_unique":
                continue
            table = ctx.catalog.tables.get(change.table)
            partial = change.state_column is not None
            if table is None or not table.has_unique_on(change.columns, whole_table=not partial):
                raise RepairFailed(
                    f"{action.repair} on {action.table} did not fix it: no unique index "
                    f"enforces {change.table}({', '.join(change.columns)}) afterwards",
                    action=action.repair,
                    table=action.table,
                )


__all__ = ["Action", "RepairResult", "SchemaChange", "plan_for", "repair", "repair_ids"]
