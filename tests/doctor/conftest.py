"""Fixtures for the doctor: one empty database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest) -> str:
    """An empty database URL, once per dialect (each rule is written once, runs on both)."""
    name = "fresh_sqlite_url" if request.param == "sqlite" else "fresh_pg_url"
    return request.getfixturevalue(name)


_PRECISION: dict[str, list[str]] = {}


@pytest.fixture(scope="session")
def corpus_precision() -> dict[str, list[str]]:
    """Per check, the verdict of every finding on the corpus ("true", "false", "new")."""
    return _PRECISION


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not _PRECISION:
        return
    write = terminalreporter.write_line
    write("doctor corpus precision (findings / true / false):")
    for check in sorted(_PRECISION):
        verdicts = _PRECISION[check]
        write(
            f"  {check:24} {len(verdicts):3} / {verdicts.count('true'):3} / "
            f"{len(verdicts) - verdicts.count('true'):3}"
        )
