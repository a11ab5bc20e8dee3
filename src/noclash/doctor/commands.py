"""CLI front: ``noclash doctor | repair | lint``.

Each command parses flags, calls one library function (:func:`diagnose`, :func:`repair`,
:func:`lint_files`) and formats its result. Exit codes, exactly: 0 clean, 1 findings at
error level (or a repair whose post-condition failed), 2 cannot connect or read.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from noclash.doctor.context import DEFAULT_TOKEN_THRESHOLD, Options
from noclash.doctor.errors import DoctorError
from noclash.doctor.intent import KeySpec
from noclash.doctor.model import Report

if TYPE_CHECKING:
    from noclash.doctor.repairs import RepairResult
from noclash.doctor.report import Format, render_rich, to_json, to_sarif


class PlanFormat(StrEnum):
    RICH = "rich"
    JSON = "json"


UrlArgument = Annotated[
    str | None,
    typer.Argument(help="Database URL (default: the configured NOCLASH_DATABASE_URL)."),
]
FormatOption = Annotated[
    Format, typer.Option("--format", "-f", help="rich (a table), json, or sarif 2.1.0.")
]
KeyOption = Annotated[
    list[str] | None,
    typer.Option("--key", help="State a unique key: table.column[,column...]. Repeatable."),
]
ExcludeOption = Annotated[
    list[str] | None, typer.Option("--exclude", help="Skip a check by id. Repeatable.")
]
ThresholdOption = Annotated[
    float,
    typer.Option(help="Flag random tokens whose collision probability at 10x rows exceeds this."),
]


def _console() -> Console:
    # Wide enough for SQL when piped (CI logs, the README); the terminal's width otherwise.
    # $COLUMNS wins (rich reads it); a pipe without it gets 160 columns.
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(stderr=False, soft_wrap=False, width=None if wide else 160)


def _plain_console() -> Console:
    """For the plan: statements are copied by hand, so never wrap them."""
    return Console(stderr=False, soft_wrap=True)


def _progress_console() -> Console | None:
    err = Console(stderr=True)
    return err if err.is_terminal else None


def _url(url: str | None) -> str:
    from noclash.config import Settings

    return url or Settings().sqlalchemy_url


def _options(key: list[str] | None, exclude: list[str] | None, threshold: float) -> Options:
    try:
        keys = tuple(KeySpec.parse(k) for k in key or ())
    except ValueError as exc:
        typer.echo(f"noclash: {exc}", err=True)
        raise typer.Exit(2) from None
    return Options(keys=keys, exclude=tuple(exclude or ()), token_threshold=threshold)


def _fail(exc: DoctorError) -> typer.Exit:
    typer.echo(f"noclash: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def _emit(report: Report, fmt: Format, rules: list[tuple[str, str, str]]) -> None:
    if fmt is Format.JSON:
        typer.echo(to_json(report))
    elif fmt is Format.SARIF:
        typer.echo(to_sarif(report, rules))
    else:
        render_rich(report, _console())


def check_rules() -> list[tuple[str, str, str]]:
    from noclash.doctor.checks import CHECKS

    return [(c.ID, c.TITLE, c.HELP) for c in CHECKS]


def doctor(
    url: UrlArgument = None,
    fmt: FormatOption = Format.RICH,
    key: KeyOption = None,
    exclude: ExcludeOption = None,
    token_threshold: ThresholdOption = DEFAULT_TOKEN_THRESHOLD,
) -> None:
    """Inspect a SQLite or PostgreSQL database for duplicate-key hazards.

    Exit code 0: clean (warnings allowed); 1: findings at error level; 2: cannot connect
    or read. Every check: docs/doctor/index.md.
    """
    from noclash.doctor.diagnose import diagnose

    options = _options(key, exclude, token_threshold)
    progress = _progress_console()
    try:
        if progress is not None:
            with progress.status("inspecting") as status:
                report = diagnose(_url(url), options, on_progress=status.update)
        else:
            report = diagnose(_url(url), options)
    except DoctorError as exc:
        raise _fail(exc) from None
    _emit(report, fmt, check_rules())
    raise typer.Exit(report.exit_code)


class Emit(StrEnum):
    SQL = "sql"
    ALEMBIC = "alembic"
    DJANGO = "django"


def repair(
    url: UrlArgument = None,
    apply: Annotated[bool, typer.Option("--apply", help="Execute the plan.")] = False,
    backup_dir: Annotated[
        Path | None,
        typer.Option(
            help="Write backups as JSONL here instead of the noclash_repair_backup table."
        ),
    ] = None,
    fmt: Annotated[
        PlanFormat, typer.Option("--format", "-f", help="rich or json (the plan).")
    ] = PlanFormat.RICH,
    emit: Annotated[
        Emit | None,
        typer.Option(
            help="Write the plan as a migration instead: plain sql, an alembic revision, "
            "or a django migration (RunSQL with matching state_operations)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="With --emit: the file (sql, alembic) or directory (django)."
        ),
    ] = None,
    key: KeyOption = None,
    exclude: ExcludeOption = None,
    token_threshold: ThresholdOption = DEFAULT_TOKEN_THRESHOLD,
) -> None:
    """Print the repair plan for a database; with --apply, execute and verify it.

    Each action runs in a transaction, backs up the rows it changes first and is verified
    by running the doctor again. Exit code 0: done (or plan printed); 1: a repair failed
    and was rolled back, or errors remain that no repair fixed; 2: cannot connect or read.
    """
    from noclash.doctor.repairs import repair as run_repair

    if emit is not None and apply:
        typer.echo(
            "noclash: --emit writes the plan for your migration tool; drop --apply", err=True
        )
        raise typer.Exit(2)
    options = _options(key, exclude, token_threshold)
    progress = _progress_console()
    try:
        if progress is not None:
            with progress.status("planning") as status:
                result = run_repair(
                    _url(url),
                    options,
                    apply=apply,
                    backup_dir=backup_dir,
                    on_progress=status.update,
                )
        else:
            result = run_repair(_url(url), options, apply=apply, backup_dir=backup_dir)
    except DoctorError as exc:
        raise _fail(exc) from None
    if emit is not None:
        _write_emitted(result, emit, output)
        raise typer.Exit(0)
    if fmt is PlanFormat.JSON:
        typer.echo(
            json.dumps(
                {
                    "actions": [a.to_dict() for a in result.actions],
                    "applied": result.applied,
                    "backup_rows": result.backup_rows,
                    "manual": [f.to_dict() for f in result.manual],
                    "orm": result.orm,
                    "unfixed": [f.to_dict() for f in result.unfixed],
                },
                indent=2,
                sort_keys=True,
            )
        )
        raise typer.Exit(1 if result.unfixed else 0)
    out = _plain_console()
    if result.orm:
        out.print(
            f"schema managed by {result.orm}: `noclash repair --emit {_emit_for(result.orm)}` "
            "writes this plan as its migration",
            highlight=False,
        )
    for f in result.manual:
        out.print(
            f"[yellow]no automatic repair[/yellow] for {f.check} on {f.location}: {f.message}",
            highlight=False,
        )
    if not result.actions:
        out.print("noclash repair: nothing to repair")
        _print_unfixed(out, result)
        raise typer.Exit(1 if result.unfixed else 0)
    verb = "applied" if result.applied else "plan (dry run; --apply executes it)"
    out.print(f"noclash repair: {len(result.actions)} actions, {verb}")
    for i, a in enumerate(result.actions, 1):
        out.print(
            f"\n[bold]{i}. {a.repair}[/bold] {a.table}({', '.join(a.columns)}) "
            f"[dim]fixes {a.check}[/dim]",
            highlight=False,
        )
        out.print(f"   {a.summary}", highlight=False)
        if result.applied:
            out.print(f"   done: {a.changed_rows} rows changed (backed up first)", highlight=False)
        out.print(f"   locks: {a.locks}", highlight=False)
        if a.triggers:
            out.print(
                f"   triggers: {', '.join(a.triggers)} fire on the rows it updates; what they "
                "write is not in the backup",
                highlight=False,
                markup=False,
            )
        for s in a.statements:
            out.print(f"   {s};", highlight=False, markup=False)
    if result.applied:
        where = str(backup_dir) if backup_dir else "table noclash_repair_backup"
        out.print(
            f"\nbacked up {result.backup_rows} rows to {where}; every post-condition verified",
            highlight=False,
        )
        _print_unfixed(out, result)
    raise typer.Exit(1 if result.unfixed else 0)


def _print_unfixed(out: Console, result: RepairResult) -> None:
    for f in result.unfixed:
        out.print(f"[red]not fixed[/red]: {f.check} on {f.location}: {f.message}", highlight=False)
    if result.unfixed:
        out.print(
            f"{len(result.unfixed)} errors remain that no automatic repair fixes", highlight=False
        )


def _emit_for(orm: str) -> str:
    return {"django": "django", "alembic": "alembic"}.get(orm, "sql")


def _write_emitted(result: RepairResult, emit: Emit, output: Path | None) -> None:
    from noclash.doctor import emit as emitters

    if emit is Emit.DJANGO:
        files = emitters.emit_django(
            result, history=result.history if result.orm == "django" else ()
        )
        if output is None:
            for path, text in files.items():
                typer.echo(f"# {path}\n{text}")
            return
        for path, text in files.items():
            dest = output / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
            typer.echo(f"wrote {dest}", err=True)
        return
    if emit is Emit.ALEMBIC:
        heads = tuple(v for _k, v in result.history) if result.orm == "alembic" else ()
        text = emitters.emit_alembic(result, heads=heads)
    else:
        rebuilds = any("legacy_alter_table" in s for a in result.actions for s in a.statements)
        text = emitters.emit_sql(result, target=result.target, rebuilds=rebuilds)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


def lint(
    files: Annotated[list[Path], typer.Argument(help="Migration SQL files.")],
    fmt: FormatOption = Format.RICH,
    exclude: ExcludeOption = None,
) -> None:
    """Check migration SQL for statements that lock, rewrite or fail on a live table.

    Exit code 0: clean; 1: findings at error level; 2: a file cannot be read.
    """
    from noclash.doctor.lint import RULES, lint_files

    try:
        report = lint_files(files, exclude=tuple(exclude or ()))
    except DoctorError as exc:
        raise _fail(exc) from None
    _emit(report, fmt, [(r.ID, r.TITLE, r.HELP) for r in RULES])
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add the doctor's commands to the ``noclash`` CLI."""
    app.command("doctor")(doctor)
    app.command("repair")(repair)
    app.command("lint")(lint)
