"""Live streams across ``noclash serve`` processes: real processes on one database.

- Four processes on one PostgreSQL: a stream on process 1 gets every message stored
  through processes 2 to 4 (200, posted concurrently), none missing and none twice,
  across a forced disconnect and a reconnect with ``Last-Event-ID``. The processes
  re-read only every minute, so events arriving within seconds came by NOTIFY.
- Two processes on one SQLite file (no notifications): the periodic re-read brings the
  other process's events.
- A process stopped while a stream is open stops at once (its streams are closed; the
  client would reconnect elsewhere), without a traceback.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from noclash.chat.users import create_user
from noclash.db.engine import create_engine
from tests.support.serve import Served, serving
from tests.support.sse import stream

BASE_ENV = {"NOCLASH_DISPATCHER": "off"}


@pytest.fixture
def pg_url(_migrated_templates, pg_databases):
    url = pg_databases.create(template=_migrated_templates["postgresql"])
    try:
        yield url
    finally:
        pg_databases.drop(url)


def _token(url: str) -> str:
    engine = create_engine(url)
    try:
        return create_user(engine, f"agent-{time.monotonic_ns()}@example.com")[1]
    finally:
        engine.dispose()


def _setup(base_url: str, token: str) -> tuple[dict, dict]:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        bot = c.post("/api/chatbots", json={"name": "processes"}).json()
        connection = c.post(f"/api/chatbots/{bot['id']}/connections",
                            json={"channel": "custom", "external_id": "sms"}).json()  # fmt: skip
    return bot, connection


def _pulled(base_url: str, token: str) -> list[dict]:
    items, after = [], None
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        while True:
            query = {"limit": 200} | ({"after": after} if after else {})
            page = c.get("/api/events", params=query).json()
            items += page["items"]
            after = page["next_cursor"]
            if after is None:
                return items


def _no_traceback(*processes: Served) -> None:
    for served in processes:
        log = served.stderr()
        assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


@pytest.mark.slow
def test_four_processes_on_postgresql_one_stream_sees_everything(pg_url, tmp_path: Path):
    env = BASE_ENV | {"NOCLASH_STREAM_REREAD_SECONDS": "60"}
    token = _token(pg_url)
    with ExitStack() as stack:
        servers = [stack.enter_context(serving(pg_url, tmp_path, env=env)) for _ in range(4)]
        home, writers = servers[0], servers[1:]
        bot, connection = _setup(home.base_url, token)
        path = f"/api/stream?chatbot_id={bot['id']}"
        first = stream(home.base_url, path, token=token).open()
        total, acknowledged = 200, []
        lock = threading.Lock()
        halfway = threading.Event()
        clients = [
            httpx.Client(base_url=s.base_url, headers={"Authorization": f"Bearer {token}"},
                         timeout=60)
            for s in writers
        ]  # fmt: skip
        turn = itertools.count()

        def post(i: int) -> None:
            client = clients[next(turn) % len(clients)]
            body = {"psid": f"customer-{i % 10}", "message_id": f"m-{i}", "text": f"n{i}"}
            answer = client.post(f"/api/connections/{connection['id']}/inbound", json=body)
            assert answer.status_code == 201, answer.text
            with lock:
                acknowledged.append(answer.json()["message_id"])
                if len(acknowledged) == total // 2:
                    halfway.set()

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(post, i) for i in range(total)]
            assert halfway.wait(60)
            # A forced disconnect in the middle of the load, and a reconnect from the
            # last event received, through the same process.
            first.wait_for(1)
            first.close()
            last = first.events[-1].id
            second = stream(home.base_url, path, token=token, last_event_id=last).open()
            for future in futures:
                future.result()
        for client in clients:
            client.close()
        expected = _pulled(home.base_url, token)
        # 200 messages and the 10 customers' conversations.
        assert len(expected) == total + 10
        arrived = second.wait(lambda r: len(first.events) + len(r.events) >= len(expected),
                              timeout=15)  # fmt: skip
        second.close()
        assert arrived, (len(first.events), len(second.events), len(expected))
        got = first.events + second.events
        assert [e.id for e in got] == [e["id"] for e in expected], "missing, twice or reordered"
        assert [e.data for e in got] == expected
        messages = [e.data["data"]["message"]["id"] for e in got if e.event == "message.created"]
        assert sorted(messages) == sorted(acknowledged)
        _no_traceback(*servers)


def test_two_processes_on_one_sqlite_file_see_each_other_by_rereading(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'noclash.db'}"
    env = BASE_ENV | {"NOCLASH_STREAM_REREAD_SECONDS": "0.5"}
    with serving(url, tmp_path, env=env) as one:
        token = one.token
        assert token is not None
        with serving(url, tmp_path, env=env) as two:
            bot, connection = _setup(one.base_url, token)
            with stream(one.base_url, "/api/stream", token=token) as reader:
                body = {"psid": "ada", "message_id": "m-1", "text": "through two"}
                with httpx.Client(base_url=two.base_url,
                                  headers={"Authorization": f"Bearer {token}"}) as c:  # fmt: skip
                    assert c.post(f"/api/connections/{connection['id']}/inbound",
                                  json=body).status_code == 201  # fmt: skip
                got = reader.wait_for(2, timeout=10)
            assert [e.event for e in got] == ["conversation.created", "message.created"]
            assert got[1].data["chatbot_id"] == bot["id"]
            _no_traceback(one, two)


def test_a_stopping_process_closes_its_streams(tmp_path: Path):
    """uvicorn's graceful stop waits for responses under way; a stream never ends by
    itself, so without noclash's protocol closing it the process would hang until killed."""
    url = f"sqlite:///{tmp_path / 'noclash.db'}"
    with serving(url, tmp_path, env=BASE_ENV) as served:
        token = served.token
        assert token is not None
        reader = stream(served.base_url, "/api/stream", token=token).open()
        assert reader.status == 200
        started = time.monotonic()
        served.stop()
        stopped = time.monotonic() - started
        assert reader.wait(lambda r: r.ended, timeout=10)
        reader.close()
        assert served.proc.returncode == 0
        assert stopped < 10, stopped
        _no_traceback(served)
