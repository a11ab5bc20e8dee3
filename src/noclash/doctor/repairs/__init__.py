"""``noclash repair``: plan and apply the fixes for the doctor's findings.

Contract of every repair (one module each, named after its id):

- ``plan(ctx, finding) -> Action | None``: what it would do, the SQL and the locks, from a
  read-only context; ``None`` when the finding needs a human.
- ``Action.apply(ctx, backup)``: runs inside one transaction (the caller commits): copies
  the rows it changes into the backup first, changes them in batches, and returns the
  statements that must run *after* commit (``CREATE INDEX CONCURRENTLY`` cannot run inside
  a transaction block).

The runner then re-runs the doctor and requires the finding to be gone (the
post-condition); a repair whose finding is gone is never planned again, so a second
``repair --apply`` changes nothing.
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

from noclash.doctor.connect import connection, display_url, open_engine, reading
from noclash.doctor.context import Context, Options
from noclash.doctor.diagnose import inspect, read_only_session, run_checks
from noclash.doctor.errors import DoctorError, RepairFailed
from noclash.doctor.model import Finding, Report
from noclash.doctor.repairs.backup import Backup

BATCH_SIZE = 500


@dataclass
class Action:
    """One planned repair."""

    repair: str
    check: str
    table: str
    columns: tuple[str, ...]
    summary: str
    statements: list[str]
    locks: str
    # apply(ctx, backup, progress) -> statements to run after commit, outside a transaction
    apply: Callable[[Context, Backup, Callable[[str], None]], list[str]] = field(repr=False)
    changed_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "columns": list(self.columns),
            "locks": self.locks,
            "repair": self.repair,
            "statements": self.statements,
            "summary": self.summary,
            "table": self.table,
        }


@dataclass
class RepairResult:
    actions: list[Action]
    applied: bool
    backup_rows: int = 0
    remaining: Report | None = None
    # Findings at error level that no automatic repair addresses: for a human.
    manual: list[Finding] = field(default_factory=list)


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
        if action is not None:
            actions.append(action)
    return actions


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
            if f.severity == "error" and (f.check, f.table, f.columns) not in planned_keys
        ]
        if not apply or not actions:
            return RepairResult(actions=actions, applied=apply, manual=manual)
        backup = Backup(
            run_id=datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
            directory=backup_dir,
        )
        for planned in actions:
            progress(f"{planned.repair} on {planned.table}")
            with connection(engine) as conn:
                with conn.begin():
                    ctx = inspect(conn, options, on_progress)
                    fresh = [
                        a
                        for a in plan_for(ctx, run_checks(ctx, target))
                        if (a.repair, a.table, a.columns)
                        == (planned.repair, planned.table, planned.columns)
                    ]
                    if not fresh:
                        continue  # already fixed (by an earlier action or another process)
                    saved_before = backup.saved
                    try:
                        with reading(planned.table):
                            after = fresh[0].apply(ctx, backup, progress)
                    except DoctorError:
                        raise  # the transaction is rolled back on the way out
                    except Exception as exc:
                        raise RepairFailed(
                            f"{planned.repair} on {planned.table} failed and was rolled back: "
                            f"{exc}",
                            action=planned.repair,
                            table=planned.table,
                        ) from exc
                    # Every changed row is backed up first, so the backup counts them.
                    planned.changed_rows = backup.saved - saved_before
                if after:
                    _run_outside_transaction(conn, after, planned, progress)
            _verify(engine, options, planned, target)
        with read_only_session(engine) as ro:
            remaining = run_checks(inspect(ro, options, None), target)
        return RepairResult(
            actions=actions,
            applied=True,
            backup_rows=backup.saved,
            remaining=remaining,
            manual=manual,
        )
    finally:
        if isinstance(database, str):
            engine.dispose()


_CONCURRENT_BUILD = re.compile(
    r"^CREATE (?:UNIQUE )?INDEX CONCURRENTLY (?:IF NOT EXISTS )?(\S+)", re.I
)


def _run_outside_transaction(
    conn: Connection, statements: list[str], action: Action, progress: Callable[[str], None]
) -> None:
    """Run CONCURRENTLY statements in autocommit mode.

    A failed concurrent build leaves an invalid index behind (which still slows writes and,
    once ready, may enforce): drop it so the database is as it was before the statement.
    """
    auto = conn.execution_options(isolation_level="AUTOCOMMIT")
    for stmt in statements:
        progress(stmt)
        try:
            auto.exec_driver_sql(stmt)
        except sa.exc.DBAPIError as exc:
            if m := _CONCURRENT_BUILD.match(stmt):
                name = m.group(1)
                schema = action.table.rpartition(".")[0]
                if schema and "." not in name:
                    name = f'"{schema}".{name}'
                auto.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise RepairFailed(
                f"{action.repair} on {action.table}: {stmt} failed: {detail}",
                action=action.repair,
                table=action.table,
            ) from exc


def _verify(engine: Engine, options: Options, action: Action, target: str) -> None:
    """The post-condition: the finding this action addressed is gone."""
    with read_only_session(engine) as ro:
        report = run_checks(inspect(ro, options, None), target)
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


def batches(items: list[Any], size: int = BATCH_SIZE) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def row_key(ctx: Context, table: str) -> str:
    """The one SQL expression that identifies a row, or :class:`RepairFailed`."""
    pk = ctx.pk_expr(table)
    if len(pk) != 1 or pk[0] == "ctid::text":
        raise RepairFailed(
            f"{table} needs a single-column primary key for an automatic repair",
            action="plan",
            table=table,
        )
    return pk[0]


def select_rows(ctx: Context, table: str, where: str, params: dict | None = None) -> list[dict]:
    """Whole rows matching ``where`` (for the backup), their key under ``noclash_key``."""
    key = row_key(ctx, table)
    rows = (
        ctx.conn.execute(
            sa.text(
                f"SELECT {key} AS noclash_key, * FROM {ctx.t(table)} WHERE {where} ORDER BY {key}"
            ),
            params or {},
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


__all__ = [
    "Action",
    "RepairResult",
    "batches",
    "plan_for",
    "repair",
    "repair_ids",
    "row_key",
    "select_rows",
]
