"""Generate ``docs/doctor/<id>.md`` from the checks and rules themselves.

One source of truth: a page is the module's docstring (problem), its ``HELP`` (solution),
its ``LINKS``, and, for checks with an ``EXAMPLE`` fixture, the real JSON the doctor
prints for it on SQLite. ``tests/doctor/test_docs.py`` fails when a committed page differs
from what this renders (like ``cog --check``). Regenerate with
``python -m noclash.doctor.docs``.
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from noclash.doctor import fixtures
from noclash.doctor.checks import CHECKS
from noclash.doctor.context import Options
from noclash.doctor.diagnose import diagnose
from noclash.doctor.intent import KeySpec
from noclash.doctor.lint.rules import RULES

DOCS = Path(__file__).resolve().parents[3] / "docs" / "doctor"

REPAIRS = {
    "duplicate-keys": "`suffix-duplicates` (slug columns) or `partial-unique` (keys of a "
    "table with a lifecycle)",
    "null-keys": "`backfill-keys` (uuid-valued keys only)",
    "weak-tokens": "`migrate-weak-tokens`",
    "uuid-castability": "`migrate-weak-tokens` (weak token columns)",
    "lifecycle-unique": "`partial-unique`",
    "sequence-behind": "`reset-sequence`",
    "missing-unique-index": "`add-unique-index` or `partial-unique` (keys stated with "
    "`--key`; a name alone is never repaired)",
}


def example(check: ModuleType) -> str | None:
    """The doctor's JSON findings for ``check`` on its example fixture (SQLite)."""
    fixture = getattr(check, "EXAMPLE", None)
    if fixture is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'example.db'}"
        fixtures.build(url, fixture)
        others = tuple(c.ID for c in CHECKS if c.ID != check.ID)
        keys = tuple(KeySpec.parse(k) for k in getattr(check, "EXAMPLE_KEYS", ()))
        report = diagnose(url, Options(exclude=others, keys=keys))
    findings = [f.to_dict() for f in report.sorted()]
    return json.dumps(findings, indent=2, sort_keys=True, ensure_ascii=False)


def render(module: ModuleType, kind: str) -> str:
    doc = (inspect.getdoc(module) or "").replace("``", "`")
    lines = [
        f"# `{module.ID}`: {module.TITLE}",
        "",
        f"*{kind}*. Exclude with `--exclude {module.ID}`; the JSON and SARIF rule id is "
        f"`{module.ID}`. Generated from `{module.__name__}`.",
        "",
        "## Problem",
        "",
        doc,
        "",
        "## Solution",
        "",
        module.HELP,
        "",
    ]
    if module.ID in REPAIRS:
        lines += [f"Automatic repair: {REPAIRS[module.ID]}; see [repair.md](repair.md).", ""]
    if kind == "doctor check" and (text := example(module)) is not None:
        lines += [
            "## Example",
            "",
            f"`python -m noclash.doctor.fixtures demo.db {module.EXAMPLE}` then "
            f"`noclash doctor sqlite:///demo.db"
            + "".join(f" --key {k}" for k in getattr(module, "EXAMPLE_KEYS", ()))
            + " --format json` reports:",
            "",
            "```json",
            text,
            "```",
            "",
        ]
    lines += ["## Links", ""]
    lines += [f"- [{title}]({url})" for title, url in module.LINKS]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    out = {f"{c.ID}.md": render(c, "doctor check") for c in CHECKS}
    out.update({f"{r.ID}.md": render(r, "lint rule") for r in RULES})
    return out


def main() -> int:
    for name, text in pages().items():
        (DOCS / name).write_text(text, encoding="utf-8")
        print(f"wrote docs/doctor/{name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


DEMO_KEYS = ["--key", "support_conversations.page_connection_id,psid", "--key", "chat_threads.slug"]
# The migration the demo lints: the file README and docs/doctor.md point readers to, so the
# generated session and the file they can run it on are one text.
DEMO_MIGRATION = DOCS.parents[1] / "examples" / "migrations" / "20240502_chatbots_uuid_token.sql"


def demo_session(columns: int = 120) -> str:
    """A real session on the seeded legacy SQLite database, as markdown (for cog).

    Runs the installed CLI in a temporary directory so paths in the output are short and
    the same on every machine.
    """
    import os
    import subprocess

    env = os.environ | {"COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("NOCLASH_DATABASE_URL", None)
    steps = [
        ["python", "-m", "noclash.doctor.fixtures", "legacy.db"],
        ["noclash", "doctor", "sqlite:///legacy.db", *DEMO_KEYS],
        ["noclash", "repair", "sqlite:///legacy.db", *DEMO_KEYS],
        ["noclash", "repair", "sqlite:///legacy.db", *DEMO_KEYS, "--apply"],
        ["noclash", "doctor", "sqlite:///legacy.db", *DEMO_KEYS],
        ["noclash", "repair", "sqlite:///legacy.db", *DEMO_KEYS, "--apply"],
        ["noclash", "lint", "migrations/20240502_chatbots_uuid_token.sql"],
    ]
    out: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "migrations").mkdir()
        (Path(tmp) / "migrations" / DEMO_MIGRATION.name).write_text(DEMO_MIGRATION.read_text())
        for argv in steps:
            real = (
                [sys.executable, "-m", "noclash", *argv[1:]]
                if argv[0] == "noclash"
                else [
                    sys.executable,
                    *argv[1:],
                ]
            )
            proc = subprocess.run(
                real, cwd=tmp, env=env, capture_output=True, text=True, timeout=120
            )
            text = (proc.stdout + proc.stderr).rstrip()
            out += ["```console", f"$ {' '.join(argv)}", text, f"# exit code {proc.returncode}"]
            out += ["```", ""]
    return "\n".join(out).rstrip() + "\n"
