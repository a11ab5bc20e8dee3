"""``python -m bench``: the same run as ``noclash bench``, without the CLI package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.runner import main
from bench.scenarios import SCENARIOS


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke size (seconds, not minutes)")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write JSON here")
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)"
    )
    parser.add_argument("--writers", action="append", type=int, help="writer counts (repeatable)")
    parser.add_argument(
        "--dialect", action="append", choices=("sqlite", "postgresql"), help="databases"
    )
    args = parser.parse_args(argv)
    return main(
        quick=args.quick,
        json_path=args.json_path,
        scenarios=args.scenario,
        writers=args.writers,
        dialects=tuple(args.dialect or ("sqlite", "postgresql")),
    )


if __name__ == "__main__":
    sys.exit(cli())
