"""One benchmark run: pick scenarios, run them, print the table, check the targets.

``noclash bench`` and ``python -m bench`` both call :func:`main`; the smoke test calls
:func:`run` and inspects the returned document.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.databases import DIALECTS, Databases
from bench.harness import (
    CaseResult,
    Config,
    results_table,
    run_all,
    to_json,
    write_json,
)
from bench.scenarios import SCENARIOS, Env, registry
from bench.targets import evaluate


def machine(databases: Databases, dialects: Sequence[str]) -> dict[str, Any]:
    """What the figures were measured on (for docs/performance.md)."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    if "postgresql" in dialects:
        info["postgresql"] = databases.server_version("postgresql")
        info["postgresql_server"] = databases.describe_pg()
    return info


def run(
    config: Config,
    *,
    scenarios: Sequence[str] | None = None,
    dialects: Sequence[str] = DIALECTS,
    pg_url: str | None = None,
    console: Console | None = None,
) -> tuple[list[CaseResult], dict[str, Any]]:
    """Run the chosen scenarios; return the results and the JSON document."""
    chosen = list(scenarios or SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    factories = registry()
    with Databases(pg_url) as databases:
        if "postgresql" in dialects:
            config = replace(config, max_connections=databases.pg_max_connections())
        env = Env(databases, tuple(dialects))
        specs = [spec for name in chosen for spec in factories[name](env, config)]
        results = list(run_all(specs, config, console))
        targets = evaluate(results)
        document = to_json(
            results, config=config, machine=machine(databases, dialects), targets=targets
        )
    return results, document


def main(
    *,
    quick: bool = False,
    json_path: Path | None = None,
    scenarios: Sequence[str] | None = None,
    writers: Sequence[int] | None = None,
    dialects: Sequence[str] = DIALECTS,
) -> int:
    """Run, print the table and the targets, optionally write JSON; return the exit code."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    config = Config.quick_size(writers) if quick else Config.full(writers)
    try:
        results, document = run(
            config, scenarios=scenarios, dialects=dialects, console=Console(stderr=True)
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    console.print(results_table(results))
    for target in document["targets"]:
        mark = "[green]met[/]" if target["met"] else "[red]missed[/]"
        console.print(f"{mark}  {target['target']}: {target['measured']}")
    if json_path is not None:
        write_json(json_path, document)
        console.print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
