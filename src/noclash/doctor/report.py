"""Rendering a report: a rich table for people, JSON for tools, SARIF for code scanning.

The JSON document is ``Report.to_dict()`` dumped with sorted keys (schema in
``docs/doctor/index.md``; ``schema_version`` changes only when a field changes meaning).
SARIF is version 2.1.0: one rule per check id, one result per finding, located by file and
line for lint and by a logical location (``table`` / ``table.column``) for the doctor.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from noclash.doctor.model import Finding, Report, Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
DOCS_BASE = "docs/doctor"
_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.NOTE: "cyan"}


class Format(StrEnum):
    RICH = "rich"
    JSON = "json"
    SARIF = "sarif"


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _evidence_text(evidence: dict[str, Any]) -> str:
    """Evidence as short ``key=value`` lines; samples show their keys, counts and row ids."""
    parts = []
    for key in sorted(evidence):
        value = evidence[key]
        if value is None or value == [] or value == {}:
            continue
        if key == "samples":
            for sample in value[:3]:
                shown = sample.get("key", sample.get("values"))
                if isinstance(shown, list) and len(shown) == 1:
                    shown = shown[0]
                count = sample.get("count", len(sample.get("values", [])))
                parts.append(f"{shown!r} x{count} ids={sample.get('ids')}")
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key}={value}")
    return "\n".join(parts)


def render_rich(report: Report, console: Console) -> None:
    """A table of findings, then each one's fix (SQL printed unwrapped, to copy)."""
    findings = report.sorted()
    if not findings:
        console.print(f"[green]{report.tool}: no findings[/green] ({report.target})")
        return
    lint = any(f.file for f in findings)
    table = Table(title=f"{report.tool}: {report.target}", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("severity")
    table.add_column("check", overflow="fold", max_width=21)
    table.add_column("file:line" if lint else "table(columns)", overflow="fold", max_width=24)
    table.add_column("finding and evidence", ratio=1, overflow="fold")
    for n, f in enumerate(findings, 1):
        evidence = _evidence_text(f.evidence.to_dict()).replace("\n", "; ")
        table.add_row(
            str(n),
            f"[{_STYLE[f.severity]}]{f.severity}[/]",
            f.check,
            f.location,
            Text(f.message) + (Text("\n" + evidence, style="dim") if evidence else Text("")),
        )
    console.print(table)
    console.print("fixes:", highlight=False)
    for n, f in enumerate(findings, 1):
        how = f"noclash repair ({f.fix.repair})" if f.fix.repair else "by hand"
        console.print(f"  #{n} {f.check}: {how}", highlight=False, markup=False)
        if f.fix.sql:
            console.print(f"     {f.fix.sql}", highlight=False, markup=False, soft_wrap=True)
    if report.orm:
        idioms = {f.fix.idiom for f in findings if f.fix.idiom}
        for text in sorted(idioms):
            console.print(f"{text}.", highlight=False, markup=False, soft_wrap=True)
    counts = report.counts()
    console.print(
        f"{counts['error']} errors, {counts['warning']} warnings, {counts['note']} notes "
        f"(docs: {DOCS_BASE}/<check>.md)",
        highlight=False,
    )


def _location(f: Finding) -> dict[str, Any]:
    if f.file is not None:
        return {
            "physicalLocation": {
                "artifactLocation": {"uri": f.file},
                "region": {"startLine": f.line or 1},
            }
        }
    name = f.table or "database"
    logical = [{"fullyQualifiedName": name, "kind": "table", "name": name}]
    logical += [
        {"fullyQualifiedName": f"{name}.{c}", "kind": "column", "name": c} for c in f.columns
    ]
    return {"logicalLocations": logical}


def to_sarif(report: Report, rules: list[tuple[str, str, str]]) -> str:
    """SARIF 2.1.0; ``rules`` is (id, title, help) for every check that ran or could run."""
    index = {rid: i for i, (rid, _t, _h) in enumerate(rules)}
    results = []
    for f in report.sorted():
        result: dict[str, Any] = {
            "level": str(f.severity),
            "locations": [_location(f)],
            "message": {"text": f.message},
            "properties": {"evidence": f.evidence.to_dict(), "fix": f.fix.to_dict()},
            "ruleId": f.check,
        }
        if f.check in index:
            result["ruleIndex"] = index[f.check]
        results.append(result)
    doc = {
        "$schema": SARIF_SCHEMA,
        "runs": [
            {
                "results": results,
                "tool": {
                    "driver": {
                        "informationUri": "https://github.com/noclash/noclash",
                        "name": report.tool,
                        "rules": [
                            {
                                "fullDescription": {"text": help_text},
                                "help": {"text": help_text},
                                "helpUri": f"{DOCS_BASE}/{rid}.md",
                                "id": rid,
                                "name": rid,
                                "shortDescription": {"text": title},
                            }
                            for rid, title, help_text in rules
                        ],
                        "version": "0.1.0",
                    }
                },
            }
        ],
        "version": "2.1.0",
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, default=str)
