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


def render(document: dict[str, Any]) -> str:
    machine = document["machine"]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    config = document["config"]
    lines += [
        "",
        f"Rounds: {config['rounds']} per contender and case, {config['seconds']} s each "
        f"(at most {config['max_ops']} ops), contenders alternating.",
        "",
        markdown_table(load_results(document)),
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
