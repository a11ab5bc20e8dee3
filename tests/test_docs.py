"""Docs generated from real output cannot drift from the code."""

from __future__ import annotations

import functools
import pathlib
import re
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


@functools.cache
def _anchors(page: pathlib.Path) -> set[str]:
    """The fragments GitHub gives a page's headings (lowercase, punctuation dropped, spaces
    as hyphens, a repeated heading suffixed ``-1``, ``-2``...), code blocks skipped."""
    anchors: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+)", line)):
            base = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchor, n = base, 0
            while anchor in anchors:
                n += 1
                anchor = f"{base}-{n}"
            anchors.add(anchor)
    return anchors


def test_docs_links_resolve():
    """Every relative link names a file that exists, and its #fragment a heading there."""
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for line in page.read_text().splitlines():
            for part in line.split("](")[1:]:
                link = part.split(")")[0]
                target, _, fragment = link.partition("#")
                if "://" in target or target.startswith("mailto:") or not (target or fragment):
                    continue
                path = page.parent / target if target else page
                assert path.exists(), f"{page.name}: {target}"
                if fragment and path.suffix == ".md":
                    assert fragment in _anchors(path), f"{page.name}: {link}"
