"""Events: one per thing that happened, in the transaction that did it, read in one order.

On SQLite and PostgreSQL, through the real app: 64 concurrent redeliveries of one webhook
make one ``message.created``; every kind of change records its event; the pull API pages
in order; and readers polling while many writers commit see every event exactly once, in
one order, whatever order the transactions committed in.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from noclash.db.tables import events
from tests.support.server import LiveServer


def _bot_with_custom(live: LiveServer, token: str) -> tuple[dict, dict]:
    client = live.client(token)
    bot = client.post("/api/chatbots", json={"name": "events"}).json()
    connection = client.post(
        f"/api/chatbots/{bot['id']}/connections", json={"channel": "custom", "external_id": "sms"}
    ).json()
    return bot, connection


def _all_events(client: httpx.Client, **params) -> list[dict]:
    items, after = [], None
    while True:
        query = {"limit": 200, **params} | ({"after": after} if after else {})
        page = client.get("/api/events", params=query)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        after = page.json()["next_cursor"]
        if after is None:
            return items


def test_redeliveries_make_one_event(live_server):
    token = live_server.user()
    client = live_server.client(token)
    _bot, connection = _bot_with_custom(live_server, token)
    barrier = threading.Barrier(64)
    body = {"psid": "ada", "message_id": "m-1", "text": "hello once"}

    def deliver(_: int) -> int:
        barrier.wait()
        return client.post(f"/api/connections/{connection['id']}/inbound", json=body).status_code

    with ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(deliver, range(64)))
    assert sorted(set(codes)) == [200, 201] and codes.count(201) == 1
    kinds = [e["type"] for e in _all_events(client)]
    assert kinds == ["conversation.created", "message.created"]
    with live_server.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 2


def test_each_change_records_its_event(live_server):
    token = live_server.user()
    client = live_server.client(token)
    bot, connection = _bot_with_custom(live_server, token)
    inbound = client.post(f"/api/connections/{connection['id']}/inbound",
                          json={"psid": "p", "message_id": "m1", "text": "hi"}).json()  # fmt: skip
    conv = inbound["conversation_id"]
    reply = client.post(f"/api/conversations/{conv}/messages", json={"text": "hello"}).json()
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    client.post(f"/api/conversations/{conv}/snooze", json={"until": until})
    client.post(f"/api/conversations/{conv}/reopen")
    client.post(f"/api/conversations/{conv}/close")
    client.post(f"/api/conversations/{conv}/close")  # no change: no event
    api_conv = client.post(f"/api/chatbots/{bot['id']}/conversations", json={"title": "x"}).json()
    got = _all_events(client, chatbot_id=bot["id"])
    assert [(e["type"], e["data"].get("to")) for e in got] == [
        ("conversation.created", None),
        ("message.created", None),
        ("message.created", None),
        ("conversation.status_changed", "SNOOZED"),
        ("conversation.status_changed", "OPEN"),
        ("conversation.status_changed", "CLOSED"),
        ("conversation.created", None),
    ]
    assert (
        got[1]["data"]["message"]["text"] == "hi" and got[1]["data"]["message"]["direction"] == "in"
    )
    assert got[2]["data"]["message"]["id"] == reply["id"]
    assert got[2]["data"]["message"]["direction"] == "out"
    assert got[3]["data"]["from"] == "OPEN" and got[5]["data"]["from"] == "OPEN"
    assert got[6]["conversation_id"] == api_conv["id"]
    assert all(e["chatbot_id"] == bot["id"] for e in got)
    # Paging: `after` continues exactly after the named event.
    first = client.get("/api/events", params={"limit": 3}).json()
    assert [e["id"] for e in first["items"]] == [e["id"] for e in got[:3]]
    rest = client.get("/api/events", params={"after": first["next_cursor"]}).json()
    assert [e["id"] for e in rest["items"]] == [e["id"] for e in got[3:]]


def test_the_pull_api_is_the_callers_own(live_server):
    a, b = live_server.user(), live_server.user()
    bot_a, connection = _bot_with_custom(live_server, a)
    body = {"psid": "p", "message_id": "m", "text": "private"}
    live_server.client(a).post(f"/api/connections/{connection['id']}/inbound", json=body)
    b_client = live_server.client(b)
    assert b_client.get("/api/events").json()["items"] == []
    assert b_client.get("/api/events", params={"chatbot_id": bot_a["id"]}).status_code == 404
    mine = _all_events(live_server.client(a))
    assert b_client.get("/api/events", params={"after": mine[0]["id"]}).status_code == 404
    assert live_server.client().get("/api/events").status_code == 401
    assert live_server.client(a).get("/api/events", params={"after": "x"}).status_code == 422


@pytest.mark.slow
def test_readers_see_every_event_once_in_one_order_while_writers_race(live_server):
    """8 writers store 40 messages each while 2 readers poll the pull API with `after`:
    each reader gets every event exactly once, in the same order, with nothing skipped
    (an id-ordered read would lose events whose transaction committed late)."""
    token = live_server.user()
    client = live_server.client(token)
    _bot, connection = _bot_with_custom(live_server, token)
    writers, per_writer = 8, 40
    done = threading.Event()
    seen: list[list[str]] = [[], []]

    start = threading.Barrier(writers)

    def write(w: int) -> None:
        c = live_server.client(token)
        start.wait()  # every writer at once: their transactions commit out of id order
        for i in range(per_writer):
            body = {"psid": f"p{w}", "message_id": f"{w}-{i}", "text": "x"}
            answer = c.post(f"/api/connections/{connection['id']}/inbound", json=body)
            assert answer.status_code in (200, 201), answer.text

    def poll(r: int) -> None:
        c = live_server.client(token)
        after = None
        while True:
            finished = done.is_set()
            query = {"limit": 37} | ({"after": after} if after else {})
            page = c.get("/api/events", params=query).json()
            seen[r] += [e["id"] for e in page["items"]]
            if page["items"]:
                after = page["items"][-1]["id"]
            elif finished:
                return
            else:
                time.sleep(0.01)

    readers = [threading.Thread(target=poll, args=(r,)) for r in range(2)]
    for t in readers:
        t.start()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))
    done.set()
    for t in readers:
        t.join(timeout=60)
    everything = [e["id"] for e in _all_events(client)]
    assert len(everything) == writers * per_writer + writers  # messages + conversations
    for ids in seen:
        assert len(ids) == len(set(ids)), "an event read twice"
        assert ids == everything, "an event skipped or out of order"
