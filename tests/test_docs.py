"""Docs generated from real output cannot drift from the code."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import typer

from noclash.cli import app

ROOT = pathlib.Path(__file__).parents[1]


def test_cli_reference_is_current():
    result = subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", "docs/cli.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        "docs/cli.md is stale: run .venv/bin/cog -r docs/cli.md\n" + result.stdout + result.stderr
    )


def _command_paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path] if path else []
    for name, sub in getattr(command, "commands", {}).items():
        paths.extend(_command_paths(sub, (*path, name)))
    return paths


def test_every_command_is_documented():
    text = (ROOT / "docs" / "cli.md").read_text()
    paths = _command_paths(typer.main.get_command(app))
    assert ("user", "rotate-token") in paths
    for path in paths:
        assert f"## noclash {' '.join(path)}\n" in text, path


def test_readme_starts_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:10])
    assert "make run" in head and "make test" in head


def test_docs_links_resolve():
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for line in page.read_text().splitlines():
            for part in line.split("](")[1:]:
                target = part.split(")")[0].split("#")[0]
                if not target or "://" in target or target.startswith("mailto:"):
                    continue
                assert (page.parent / target).exists(), f"{page.name}: {target}"
