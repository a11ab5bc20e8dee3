"""Fixtures for the doctor: one empty database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest) -> str:
    """An empty database URL, once per dialect (each rule is written once, runs on both)."""
    name = "fresh_sqlite_url" if request.param == "sqlite" else "fresh_pg_url"
    return request.getfixturevalue(name)
