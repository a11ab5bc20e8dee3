"""``python -m bench.report RESULTS.json``: a run's JSON as the Markdown of docs/performance.md.

The docs' tables are pasted from this output, never typed by hand, so the figures in the
docs are the figures of a real run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.harness import CaseResult, ContenderResult, markdown_table


def load_results(document: dict[str, Any]) -> list[CaseResult]:
    """The cases of a JSON document as :class:`CaseResult` objects."""
    return [
        CaseResult(
            scenario=case["scenario"],
            dialect=case["dialect"],
            writers=case["writers"],
            label=case["label"],
            contenders=[ContenderResult(**c) for c in case["contenders"]],
        )
        for case in document["cases"]
    ]


def outbound_table(results: list[CaseResult]) -> str:
    """The outbound cases per delivery: statements by kind and CPU, noclash and limit."""
    rows = []
    for case in results:
        if case.scenario != "outbound":
            continue
        nc, limit = case.get("noclash"), case.get("limit")
        if nc is None or limit is None:
            continue
        kinds = nc.statements_by_kind or {}

        def per(kind: str, kinds: dict[str, float] = kinds) -> str:
            return f"{kinds.get(kind, 0.0):.3f}"

        def cpu(c: ContenderResult) -> str:
            return "-" if c.cpu_us_per_op is None else f"{c.cpu_us_per_op:,.0f}"

        ratio = "-" if limit.ratio_to_noclash is None else f"{1 / limit.ratio_to_noclash:.2f}"
        rows.append(
            f"| {case.label} | {case.dialect} | {case.writers} | {nc.ops_per_s:,.0f} "
            f"| {limit.ops_per_s:,.0f} "
            f"| {ratio} | {per('claim')} | {per('details')} | {per('settle')} | {per('other')} "
            f"| {nc.statements_per_op or 0.0:.3f} | {cpu(nc)} | {cpu(limit)} |"
        )
    if not rows:
        return ""
    head = (
        "| case | db | dispatchers | noclash deliveries/s | limit POSTs/s | noclash / limit "
        "| claim | details | settle | other | statements per delivery "
        "| noclash CPU us per delivery | limit CPU us per POST |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    return head + "\n".join(rows) + "\n"


def render(document: dict[str, Any]) -> str:
    machine = document["machine"]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    config = document["config"]
    if any(case["scenario"] != "outbound" for case in document["cases"]):
        lines += [
            "",
            f"Rounds: {config['rounds']} per contender and case, {config['seconds']} s each "
            f"(at most {config['max_ops']} ops), contenders alternating.",
        ]
    if any(case["scenario"] == "outbound" for case in document["cases"]):
        lines += [
            "",
            f"Outbound: {config['rounds']} rounds per contender and case, each a window of "
            f"{config['outbound_seconds']} s after a warm-up of at least "
            f"{config['outbound_warmup']} s, contenders alternating.",
        ]
    lines += [
        "",
        markdown_table(load_results(document)),
    ]
    outbound = outbound_table(load_results(document))
    if outbound:
        lines += [outbound]
    lines += [
        "| target | measured | |",
        "|---|---|---|",
    ]
    lines += [
        f"| {t['target']} | {t['measured']} | {'met' if t['met'] else '**missed**'} |"
        for t in document["targets"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    sys.stdout.write(render(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
