"""CLI front for the doctor: ``noclash doctor | repair | lint`` (filled in by issue 5)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the doctor's commands to the ``noclash`` CLI."""
