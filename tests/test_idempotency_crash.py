"""``kill -9`` of the serving process around a keyed create's commit, then the retry.

The server is a real subprocess (:mod:`tests.support.faulty_server`) that sends itself
SIGKILL at one instant of the create's transaction: right after the create's INSERT
(``statement``), as its COMMIT is about to go out (``commit``), or right after the database
acknowledged it (``committed``). A fresh process then serves the same database, and the
client retries with the same key and body. Whatever the instant, the create happened
exactly once: before the commit nothing survives (no row, no key: the retry creates at
once), after it both survive (the retry replays), also once the old 5-minute lease has
passed. SQL checks the rows, and that no key row was left without its answer.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from noclash.db.tables import idempotency_keys
from tests.support.creates import prepare_create
from tests.support.faulty_server import serving


def _count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def _keys(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(idempotency_keys)))


# Every instant for one create; then the two other shapes of creating route (the inbound
# path handed the request's connection, a public widget caller), one instant each. That
# every creating route runs in the request's transaction at all is checked, faster, by
# tests/test_idempotency_api.py::test_a_keyed_create_commits_once.
CASES = [
    ("chatbots", "statement"),
    ("chatbots", "commit"),
    ("chatbots", "committed"),
    ("inbound", "committed"),
    ("widget-message", "statement"),
]


@pytest.mark.parametrize(("route", "point"), CASES)
def test_kill_9_around_the_commit_then_the_retry_creates_once(
    database_url: str, engine: Engine, tmp_path: Path, route: str, point: str
) -> None:
    create = prepare_create(engine, route)
    before = _count(engine, create.table)
    log = tmp_path / "server.log"

    with serving(database_url, log, kill_at=f"{point}:{create.table.name}") as server:
        with pytest.raises(httpx.TransportError):  # the process dies: no answer at all
            httpx.post(
                server.base_url + create.path, json=create.body, headers=create.headers, timeout=30
            )
        server.wait_killed()

    committed = point == "committed"
    stored = _keys(engine)
    assert _count(engine, create.table) == before + committed
    assert len(stored) == committed  # before the commit, not even the key survived
    if committed:
        assert stored[0].response_status in (200, 201)
        # Far past the old 5-minute lease (still within the key's 24 h): nothing changes.
        with engine.begin() as conn:
            conn.execute(
                sa.update(idempotency_keys)
                .where(idempotency_keys.c.id == stored[0].id)
                .values(created_at=stored[0].created_at - timedelta(minutes=10))
            )

    with serving(database_url, log) as server, httpx.Client(base_url=server.base_url) as client:
        retry = client.post(create.path, json=create.body, headers=create.headers)
        again = client.post(create.path, json=create.body, headers=create.headers)

    assert retry.status_code == 201, retry.text
    assert ("idempotent-replayed" in retry.headers) is committed
    assert again.headers["idempotent-replayed"] == "true" and again.content == retry.content
    assert _count(engine, create.table) == before + 1
    stored = _keys(engine)
    assert len(stored) == 1 and stored[0].response_status == 201
    assert all(row.response_status is not None for row in stored)
