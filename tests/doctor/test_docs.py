"""Every check and lint rule has its docs page with the three headings; ids are unique."""

from __future__ import annotations

from pathlib import Path

from noclash.doctor.checks import CHECKS
from noclash.doctor.lint import RULES
from noclash.doctor.repairs import repair_ids

DOCS = Path(__file__).resolve().parents[2] / "docs" / "doctor"


def test_every_check_and_rule_has_a_page() -> None:
    all_ids = [c.ID for c in CHECKS] + [r.ID for r in RULES]
    assert len(all_ids) == len(set(all_ids))
    for rid in all_ids:
        page = DOCS / f"{rid}.md"
        assert page.is_file(), f"missing docs/doctor/{rid}.md"
        text = page.read_text()
        for heading in ("## Problem", "## Solution", "## Links"):
            assert heading in text, f"{page.name} lacks {heading}"


def test_module_stem_is_the_id() -> None:
    for mod in (*CHECKS, *RULES):
        assert mod.__name__.rsplit(".", 1)[-1] == mod.ID.replace("-", "_")


def test_index_lists_every_check_and_repair() -> None:
    index = (DOCS / "index.md").read_text()
    for rid in [c.ID for c in CHECKS] + [r.ID for r in RULES]:
        assert f"({rid}.md)" in index
    repair_page = (DOCS / "repair.md").read_text()
    for rid in repair_ids():
        assert f"`{rid}`" in repair_page


def test_pages_are_generated_from_the_code() -> None:
    """Like `cog --check`: regenerate with `python -m noclash.doctor.docs`."""
    from noclash.doctor.docs import pages

    for name, text in pages().items():
        assert (DOCS / name).read_text() == text, f"docs/doctor/{name} is stale"


def test_overview_session_is_current() -> None:
    """docs/doctor.md shows a real session; regenerate with `python -m cogapp -r docs/doctor.md`."""
    import subprocess
    import sys

    root = DOCS.parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", "docs/doctor.md"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
