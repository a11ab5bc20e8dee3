"""Live streams (Server-Sent Events), on SQLite and PostgreSQL, through a real server.

The streams' promise: an event reaches a connected client at once (a wake-up, not a poll:
these servers re-read only every minute, so anything faster is the hub's doing); a client
that reconnects with ``Last-Event-ID`` gets exactly what it missed, in order; a visitor
sees its own conversation and nothing internal; keep-alive comments flow; and a client
that leaves ends its stream without leaving a subscription, a thread or a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from noclash.api.routes.stream import STREAMS_PER_SESSION
from noclash.chat.users import create_user
from noclash.chat.wakeups import Hub
from noclash.db.dialects import dialect_for
from noclash.dispatch import Dispatcher
from tests.support.server import LiveServer, start_live_server
from tests.support.sse import stream

# Only wake-ups can deliver an event within a test's patience: the periodic re-read is a
# minute away.
SLOW_REREAD = {"stream_reread_seconds": 60.0}


@pytest.fixture
def server(database_url):
    with start_live_server(database_url, **SLOW_REREAD) as live:
        yield live


def _bot(live: LiveServer, token: str, **fields) -> tuple[httpx.Client, dict, dict]:
    client = live.client(token)
    bot = client.post("/api/chatbots", json={"name": "stream", **fields}).json()
    connection = client.post(
        f"/api/chatbots/{bot['id']}/connections", json={"channel": "custom", "external_id": "sms"}
    ).json()
    return client, bot, connection


def _inbound(client: httpx.Client, connection: dict, message_id: str, psid: str = "ada") -> dict:
    body = {"psid": psid, "message_id": message_id, "text": f"text of {message_id}"}
    answer = client.post(f"/api/connections/{connection['id']}/inbound", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _pulled(client: httpx.Client, **params) -> list[dict]:
    items, after = [], None
    while True:
        query = {"limit": 200, **params} | ({"after": after} if after else {})
        page = client.get("/api/events", params=query).json()
        items += page["items"]
        after = page["next_cursor"]
        if after is None:
            return items


def test_an_inbound_message_reaches_a_stream_within_2_s(server):
    token = server.user()
    client, bot, connection = _bot(server, token)
    with stream(server.base_url, "/api/stream", token=token) as reader:
        assert reader.status == 200
        assert reader.content_type.startswith("text/event-stream")
        time.sleep(0.2)
        sent = time.monotonic()
        stored = _inbound(client, connection, "m-1")
        got = reader.wait_for(2, timeout=2)
    assert [e.event for e in got] == ["conversation.created", "message.created"]
    assert got[-1].received_at - sent < 2.0
    # Each SSE id is the event's id, its data the envelope of the pull API.
    assert [e.data for e in got] == _pulled(client)
    assert [e.id for e in got] == [e.data["id"] for e in got]
    message = got[1].data
    assert message["chatbot_id"] == bot["id"]
    assert message["data"]["message"]["id"] == stored["message_id"]
    assert message["data"]["message"]["text"] == "text of m-1"


def test_a_stream_starts_live_and_follows_one_chatbot(server):
    """Without Last-Event-ID only what happens after the connect; ``chatbot_id`` narrows
    the stream to that chatbot; another user's chatbot is a 404."""
    token = server.user()
    client, bot, connection = _bot(server, token)
    _other, other_bot, other_connection = _bot(server, token)
    _inbound(client, connection, "before")
    with stream(server.base_url, "/api/stream", token=token,
                params={"chatbot_id": bot["id"]}) as reader:  # fmt: skip
        _inbound(client, other_connection, "elsewhere")
        _inbound(client, connection, "after")
        got = reader.wait_for(1, timeout=5)
        time.sleep(0.3)
    assert [e.data["data"]["message"]["text"] for e in reader.events] == ["text of after"]
    assert got[0].data["chatbot_id"] == bot["id"] != other_bot["id"]
    intruder = server.user()
    refused = stream(server.base_url, "/api/stream", token=intruder,
                     params={"chatbot_id": bot["id"]}).open()  # fmt: skip
    assert refused.status == 404 and refused.content_type == "application/problem+json"
    refused.close()
    anonymous = stream(server.base_url, "/api/stream").open()
    assert anonymous.status == 401
    anonymous.close()


@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnecting_with_last_event_id_gets_exactly_what_was_missed(server, how):
    token = server.user()
    client, _bot_row, connection = _bot(server, token)
    first = stream(server.base_url, "/api/stream", token=token).open()
    for i in range(3):
        _inbound(client, connection, f"seen-{i}")
    seen = first.wait_for(4)  # the conversation and three messages
    assert len(seen) == 4
    first.close()  # a forced disconnect
    for i in range(25):
        _inbound(client, connection, f"missed-{i}", psid=f"p{i % 3}")
    everything = _pulled(client)
    missed = everything[4:]
    assert len(missed) == 25 + 3  # three more customers: three more conversations
    last = seen[-1].id
    assert last is not None
    if how == "header":
        again = stream(server.base_url, "/api/stream", token=token, last_event_id=last)
    else:
        again = stream(server.base_url, "/api/stream", token=token,
                       params={"last_event_id": last})  # fmt: skip
    with again:
        caught_up = again.wait_for(len(missed))
        _inbound(client, connection, "live")
        again.wait_for(len(missed) + 1)
        time.sleep(0.3)
    assert [e.data for e in caught_up] == missed
    ids = again.ids
    assert len(ids) == len(set(ids)) == len(missed) + 1, "an event twice or missing"
    assert again.events[-1].data["data"]["message"]["text"] == "text of live"


def test_an_unknown_last_event_id_starts_live(server):
    token = server.user()
    client, _bot_row, connection = _bot(server, token)
    _inbound(client, connection, "old")
    other = server.user()
    other_client, _b, other_connection = _bot(server, other)
    _inbound(other_client, other_connection, "x")
    foreign = _pulled(other_client)
    for last in ["not-an-id", "01900000-0000-7000-8000-000000000000", foreign[0]["id"]]:
        with stream(server.base_url, "/api/stream", token=token, last_event_id=last) as reader:
            _inbound(client, connection, f"new-{last}")
            reader.wait_for(1, timeout=5)
            time.sleep(0.2)
        assert [e.data["data"]["message"]["text"] for e in reader.events] == [f"text of new-{last}"]


def test_the_widget_stream_is_the_visitors_own(server):
    """Visitor A sees its own messages, the agent's replies and its status, with nothing
    internal; visitor B's messages and another chatbot's never; B's session with A's token
    is a 404; a chatbot that requires auth wants the bearer here too."""
    token = server.user()
    agent = server.client(token)
    bot = agent.post("/api/chatbots", json={"name": "widget"}).json()
    visitor = server.client()
    base = f"/api/widget/{bot['public_token']}/sessions"
    a = visitor.post(base).json()
    b = visitor.post(base).json()
    with stream(server.base_url, f"{base}/{a['session_id']}/stream") as reader:
        visitor.post(f"{base}/{b['session_id']}/messages", json={"text": "from B"})
        mine = visitor.post(f"{base}/{a['session_id']}/messages", json={"text": "from A"})
        assert mine.status_code == 201
        reply = agent.post(f"/api/conversations/{a['conversation_id']}/messages",
                           json={"text": "hello A"})  # fmt: skip
        assert reply.status_code == 201
        agent.post(f"/api/conversations/{a['conversation_id']}/close")
        visitor.post(f"{base}/{a['session_id']}/messages", json={"text": "again"})
        got = reader.wait_for(6, timeout=5)
        time.sleep(0.3)
    kinds = [(e.event, (e.data["data"].get("message") or {}).get("text")) for e in reader.events]
    assert kinds == [
        ("message.created", "from A"),
        ("message.created", "hello A"),
        ("conversation.status_changed", None),
        # The closed conversation's next message opens the visitor's next conversation.
        ("conversation.created", None),
        ("message.created", "again"),
    ], kinds
    assert len(got) == 5
    for event in reader.events:
        assert set(event.data) == {"id", "type", "conversation_id", "created_at", "data"}
        assert event.id == event.data["id"]
        data = event.data["data"]
        if "message" in data:
            assert set(data) == {"message"}
            assert set(data["message"]) == {"id", "conversation_id", "direction", "text",
                                            "created_at"}  # fmt: skip
        else:
            assert set(data["conversation"]) == {"id", "status"}
    assert reader.events[1].data["data"]["message"]["direction"] == "out"
    status = reader.events[2].data["data"]
    assert (status["from"], status["to"], status["conversation"]["status"]) == (
        "OPEN", "CLOSED", "CLOSED"
    )  # fmt: skip
    raw = " ".join(str(e.data) for e in reader.events)
    assert bot["id"] not in raw and "from B" not in raw and "connection_id" not in raw

    wrong = stream(server.base_url, f"/api/widget/{bot['public_token']}/sessions/"
                   f"{b['session_id']}x/stream").open()  # fmt: skip
    assert wrong.status == 404
    wrong.close()
    other_bot = agent.post("/api/chatbots", json={"name": "other"}).json()
    crossed = stream(server.base_url, f"/api/widget/{other_bot['public_token']}/sessions/"
                     f"{a['session_id']}/stream").open()  # fmt: skip
    assert crossed.status == 404 and crossed.content_type == "application/problem+json"
    crossed.close()

    locked = agent.post("/api/chatbots", json={"name": "locked", "require_auth": True}).json()
    lbase = f"/api/widget/{locked['public_token']}/sessions"
    session = server.client(token).post(lbase).json()
    path = f"{lbase}/{session['session_id']}/stream"
    anonymous = stream(server.base_url, path).open()
    assert anonymous.status == 401
    anonymous.close()
    with stream(server.base_url, path, token=token) as authorised:
        assert authorised.status == 200


def test_one_widget_session_holds_a_few_streams_not_the_server(server):
    """An anonymous visitor's session may hold STREAMS_PER_SESSION streams in a process (its
    tabs); the next is a 429 problem with Retry-After, until one closes. Another session
    is not counted against it, and the API still answers while the streams are open."""
    token = server.user()
    bot = server.client(token).post("/api/chatbots", json={"name": "tabs"}).json()
    visitor = server.client()
    base = f"/api/widget/{bot['public_token']}/sessions"
    mine, other = visitor.post(base).json(), visitor.post(base).json()
    path = f"{base}/{mine['session_id']}/stream"
    tabs = [stream(server.base_url, path).open() for _ in range(STREAMS_PER_SESSION)]
    try:
        assert [tab.status for tab in tabs] == [200] * STREAMS_PER_SESSION
        refused = stream(server.base_url, path).open()
        assert refused.status == 429 and refused.content_type == "application/problem+json"
        refused.close()
        with stream(server.base_url, f"{base}/{other['session_id']}/stream") as elsewhere:
            assert elsewhere.status == 200
        said = visitor.post(f"{base}/{mine['session_id']}/messages", json={"text": "hi"})
        assert said.status_code == 201
        for tab in tabs:
            assert tab.wait_for(1, timeout=5)[0].data["data"]["message"]["text"] == "hi"
    finally:
        tabs.pop().close()
    assert _eventually(lambda: _open(server.base_url, path) == 200)
    for tab in tabs:
        tab.close()


def _open(base_url: str, path: str) -> int:
    reader = stream(base_url, path).open()
    reader.close()
    return reader.status


def test_keep_alive_comments(database_url):
    with start_live_server(database_url, stream_ping_seconds=0.2, **SLOW_REREAD) as live:
        token = live.user()
        with stream(live.base_url, "/api/stream", token=token) as reader:
            assert reader.wait(lambda r: len(r.comments) >= 3, timeout=5)
        assert set(reader.comments) == {"ping"} and reader.events == []


def test_a_client_that_leaves_ends_its_stream_cleanly(server, caplog):
    """Twenty streams opened and dropped while a writer stores messages: no subscription
    and no thread is left behind (anyio's idle worker threads aside: a pool), and nothing
    is logged above INFO."""
    token = server.user()
    client, _bot_row, connection = _bot(server, token)
    hub: Hub = server.app.state.hub
    # The first stream and the first event start what lives as long as the process (on
    # PostgreSQL, the hub's listener and sender).
    with stream(server.base_url, "/api/stream", token=token) as first:
        _inbound(client, connection, "warm-up")
        first.wait_for(2)
    assert _eventually(lambda: hub.subscribers == 0)
    threads = _threads()
    caplog.set_level(logging.INFO)
    busy = threading.Event()

    def write() -> None:
        i = 0
        while not busy.is_set():
            _inbound(client, connection, f"w-{i}", psid=f"p{i % 5}")
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for i in range(20):
            reader = stream(server.base_url, "/api/stream", token=token,
                            params={"last_event_id": "x"} if i % 2 else {}).open()  # fmt: skip
            reader.wait_for(1 + i % 3, timeout=5)
            reader.close()
    finally:
        busy.set()
        writer.join()
    assert _eventually(lambda: hub.subscribers == 0), hub.subscribers
    assert _eventually(lambda: _threads() <= threads), (_threads(), threads)
    loud = [r for r in caplog.records if r.levelno > logging.INFO or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


def test_the_dispatchers_events_wake_streams(database_url):
    """A snooze woken by a dispatcher reaches a stream at once: through the app's hub in
    ``noclash serve``, and (PostgreSQL) through the NOTIFY of a hub of its own, as in
    ``noclash worker``."""
    with start_live_server(database_url, **SLOW_REREAD) as live:
        token = live.user()
        client, _bot_row, connection = _bot(live, token)
        conversation = _inbound(client, connection, "m")["conversation_id"]
        hubs = [live.app.state.hub]
        own = Hub(live.engine)
        if own.across_processes:
            hubs.append(own)
        try:
            for hub in hubs:
                with stream(live.base_url, "/api/stream", token=token) as reader:
                    until = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
                    snoozed = client.post(f"/api/conversations/{conversation}/snooze",
                                          json={"until": until})  # fmt: skip
                    assert snoozed.status_code == 200
                    assert reader.wait_for(1, timeout=5)
                    _run_dispatcher(live, hub, until=lambda: len(reader.events) >= 2)
                    woke = reader.wait_for(2, timeout=5)
                assert [e.data["data"].get("to") for e in woke] == ["SNOOZED", "OPEN"]
        finally:
            own.close()


def _run_dispatcher(live: LiveServer, hub: Hub, until, timeout: float = 10) -> None:
    dispatcher = Dispatcher(live.engine, live.settings, hub=hub, senders={})

    async def run() -> None:
        task = asyncio.create_task(dispatcher.run())
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        dispatcher.stop()
        await task

    asyncio.run(run())


def _threads() -> int:
    """Threads alive, but for anyio's pool of worker threads (kept a while when idle)."""
    return sum(1 for t in threading.enumerate() if t.name != "AnyIO worker thread")


def _eventually(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True



def test_the_notify_session_does_not_wait_for_the_disk(engine):
    """A NOTIFY stores nothing, so its session commits with ``synchronous_commit = off``:
    a durable commit would flush the WAL once per NOTIFY, in the writers' way
    (docs/events.md, Across processes)."""
    dialect = dialect_for(engine)
    if not dialect.supports_listen_notify:
        pytest.skip("SQLite notifies in memory")
    session = dialect.notification_session(engine)
    try:
        setting = session._conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[attr-defined]
        libpq = session._conn.info.get_parameters()  # type: ignore[attr-defined]
        session.send("noclash_test", "*")  # and it still notifies
    finally:
        session.close()
    assert setting == "off"
    # Held for hours: a connection that died silently is found by TCP keepalives.
    assert {k: libpq.get(k) for k in ("keepalives", "keepalives_idle", "connect_timeout")} == {
        "keepalives": "1", "keepalives_idle": "30", "connect_timeout": "10"
    }


def test_a_revoked_token_ends_its_open_stream(database_url):
    """A revoke ends the agent streams opened with that token, at once in the process that
    made it: they went on receiving customers' messages, while every new request with the
    token was a 401. The client's reconnect is then a 401 too."""
    with start_live_server(database_url, stream_reread_seconds=0.2) as live:
        admin_token = create_user(live.engine, "root@example.com", is_admin=True)[1]
        agent, agent_token = create_user(live.engine, "agent@example.com")
        client, _, connection = _bot(live, agent_token)
        with stream(live.base_url, "/api/stream", token=agent_token) as reader:
            _inbound(client, connection, "before")
            assert reader.wait_for(2, timeout=5)[-1].event == "message.created"
            time.sleep(0.5)
            assert not reader.ended
            revoked = live.client(admin_token).post(f"/api/users/{agent.id}/revoke")
            assert revoked.status_code == 200, revoked.text
            deadline = time.monotonic() + 10
            while not reader.ended and time.monotonic() < deadline:
                time.sleep(0.05)
            assert reader.ended, "the stream outlived its token"
        again = stream(live.base_url, "/api/stream", token=agent_token).open()
        assert again.status == 401
        again.close()


def test_a_stream_ends_when_what_it_follows_is_deleted(database_url):
    """A widget stream whose chatbot (and so session) is deleted, and an agent stream of
    one deleted chatbot, end: they stayed open with nothing ever to come, and the widget
    learned of the end only if its connection broke. The reconnect is then a 404."""
    with start_live_server(database_url, stream_reread_seconds=0.2) as live:
        token = live.user()
        client, bot, _connection = _bot(live, token)
        session = client.post(f"/api/widget/{bot['public_token']}/sessions", json={}).json()
        visitor_path = f"/api/widget/{bot['public_token']}/sessions/{session['session_id']}/stream"
        with (
            stream(live.base_url, visitor_path) as visitor,
            stream(live.base_url, "/api/stream", token=token,
                   params={"chatbot_id": bot["id"]}) as agent,  # fmt: skip
        ):
            time.sleep(0.6)
            assert not visitor.ended and not agent.ended
            assert client.delete(f"/api/chatbots/{bot['id']}").status_code == 204
            deadline = time.monotonic() + 10
            while not (visitor.ended and agent.ended) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert visitor.ended and agent.ended
        again = stream(live.base_url, visitor_path).open()
        assert again.status == 404
        again.close()
