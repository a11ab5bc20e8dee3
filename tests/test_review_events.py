"""Review of events, webhooks to bots, the pull API and live streams (issue 13), from
outside: a real server on SQLite and PostgreSQL, real HTTP, a real SSE client.

Each test here failed before the fix it names.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import sqlalchemy as sa
from bench.processes import stop

from noclash.api.routes.stream import STREAMS_PER_SESSION
from noclash.db.tables import chatbots
from noclash.db.types import utcnow
from noclash.unique import uuid7
from tests.support.server import LiveServer, free_port, start_live_server
from tests.support.sse import StreamReader, stream
from tests.test_stream import _bot, _inbound

# What these tests check does not depend on the database engine (parsing, addresses,
# HTTP, the pages' rules): they run on SQLite alone, to keep the suite within its time.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# Only wake-ups deliver an event within a test's patience: the re-read is a minute away.
SLOW_REREAD = {"stream_reread_seconds": 60.0}


@pytest.fixture
def server(database_url: str):
    with start_live_server(database_url, **SLOW_REREAD) as live:
        yield live


def _spellings(session_id: str) -> list[str]:
    """Ways to write one session id that the widget routes all accept (parse_uuid takes
    either case, with or without dashes)."""
    bare = session_id.replace("-", "")
    return [session_id, session_id.upper(), bare, bare.upper(),
            session_id[:8].upper() + session_id[8:]]  # fmt: skip


@SQLITE_ONLY
def test_a_session_id_spelled_otherwise_is_the_same_session_for_the_stream_limit(
    server: LiveServer,
) -> None:
    """STREAMS_PER_SESSION bounds what one anonymous visitor holds in a process. The count
    was kept by the session id as written in the path, which the routes accept in any case
    and without dashes: each spelling had 4 streams of its own, so one session could hold
    every connection the server takes. Counted by the session, a fifth is a 429 whatever
    the spelling."""
    token = server.user()
    bot = server.client(token).post("/api/chatbots", json={"name": "tabs"}).json()
    visitor = server.client()
    base = f"/api/widget/{bot['public_token']}/sessions"
    session_id = visitor.post(base).json()["session_id"]
    spellings = _spellings(session_id)
    opened: list[StreamReader] = []
    try:
        for spelling in spellings[:STREAMS_PER_SESSION]:
            opened.append(stream(server.base_url, f"{base}/{spelling}/stream").open())
        assert [r.status for r in opened] == [200] * STREAMS_PER_SESSION
        for spelling in spellings:
            refused = stream(server.base_url, f"{base}/{spelling}/stream").open()
            refused.close()
            assert refused.status == 429, (spelling, refused.status)
            assert refused.content_type == "application/problem+json"
    finally:
        for reader in opened:
            reader.close()
    # Closed, they are no longer counted, whichever spelling opened them.
    deadline = time.monotonic() + 5
    while True:
        again = stream(server.base_url, f"{base}/{spellings[1]}/stream").open()
        again.close()
        if again.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert again.status == 200


def test_an_empty_chatbot_id_streams_every_chatbot_as_the_pull_api_reads_it(
    server: LiveServer,
) -> None:
    """``GET /api/stream?chatbot_id=`` (the issue's own spelling, a URL template left
    blank) was a 404 "chatbot not found", which a browser's EventSource never retries,
    while ``GET /api/events?chatbot_id=`` is every chatbot. Now both read it alike: empty
    is every chatbot, and what is not an id is a 422 naming ``chatbot_id`` (it was a 404,
    which said the chatbot was not the caller's)."""
    token = server.user()
    client, _chatbot, connection = _bot(server, token)
    every = {"chatbot_id": ""}
    with stream(server.base_url, "/api/stream", token=token, params=every) as reader:
        assert reader.status == 200, reader.body
        _inbound(client, connection, "m-1")
        got = reader.wait_for(2, timeout=10)
    assert [e.event for e in got] == ["conversation.created", "message.created"]
    pulled = client.get("/api/events", params={"chatbot_id": ""}).json()["items"]
    assert [e.data for e in got] == pulled
    for malformed in ("nope", "01a2530b-00ff-7d30-a68a", "\x00"):
        refused = stream(server.base_url, "/api/stream", token=token,
                         params={"chatbot_id": malformed})  # fmt: skip
        refused.open().close()
        assert refused.status == 422 and refused.content_type == "application/problem+json"
        problem = httpx.Response(422, content=refused.body).json()
        assert [f["field"] for f in problem["fields"]] == ["chatbot_id"], problem


# -- the example bot ----------------------------------------------------------------------

ECHO_BOT = Path(__file__).parents[1] / "examples" / "echo_bot.py"


def _raw_post(port: int, length: str, body: bytes = b"{}") -> bytes:
    """A POST with this Content-Length, the connection kept open: what comes back within
    3 s (b"" when the bot is still waiting for the body it was promised)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode()
            + body
        )
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""


def test_the_example_bot_refuses_a_body_it_cannot_bound_before_reading_it(
    tmp_path: Path,
) -> None:
    """examples/echo_bot.py read ``Content-Length`` bytes before checking the signature,
    whatever the length: a length of -1 read until the client hung up, and a huge one as
    much as the client sent. Anyone who can reach a bot (it listens on the internet)
    could hold its threads and memory. Now a length that is not a number is a 411 and
    one above 1 MiB a 413, at once and unread; a real request is still verified (401)."""
    port = free_port()
    log = (tmp_path / "bot.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(ECHO_BOT), "--port", str(port), "--noclash-url", "http://127.0.0.1:9"],
        env=os.environ | {"NOCLASH_API_TOKEN": "nc_x", "NOCLASH_WEBHOOK_SECRET": "whsec_x"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the bot did not start"
            time.sleep(0.1)
        assert _raw_post(port, "-1").startswith(b"HTTP/1.0 411")
        assert _raw_post(port, "abc").startswith(b"HTTP/1.0 411")
        assert _raw_post(port, str(1 << 40)).startswith(b"HTTP/1.0 413")
        assert _raw_post(port, "2").startswith(b"HTTP/1.0 401")  # unsigned: refused
    finally:
        stop(proc)
        log.close()


# -- the pull API -------------------------------------------------------------------------

# More chatbots than psycopg binds parameters in one statement (65,535).
MANY_CHATBOTS = 66_000


def test_the_pull_api_of_an_owner_with_very_many_chatbots(server: LiveServer) -> None:
    """``GET /api/events`` without ``chatbot_id`` put every chatbot id of the caller in
    the query, one bound parameter each: past 65,535 chatbots (a platform that makes one
    per customer) PostgreSQL refused the statement and every page was a 503 "retry
    later", for ever. Past LISTED_CHATBOTS the scope is a subquery of the owner's
    chatbots; the answer is the same, with and without ``type``."""
    token = server.user()
    client, bot, connection = _bot(server, token)
    _inbound(client, connection, "m-1")
    with server.engine.connect() as conn:
        owner_id = conn.execute(
            sa.select(chatbots.c.owner_id).where(chatbots.c.id == UUID(bot["id"]))
        ).scalar_one()
    now = utcnow()
    rows = [{"id": uuid7(), "owner_id": owner_id, "name": f"tenant {n}",
             "public_token": uuid.uuid4(), "created_at": now}
            for n in range(MANY_CHATBOTS)]  # fmt: skip
    with server.engine.begin() as conn:
        conn.execute(sa.insert(chatbots), rows)
    _inbound(client, connection, "m-2")
    first = client.get("/api/events", params={"limit": 2})
    assert first.status_code == 200, first.text
    rest = client.get("/api/events", params={"after": first.json()["next_cursor"]})
    assert rest.status_code == 200, rest.text
    items = first.json()["items"] + rest.json()["items"]
    assert [e["type"] for e in items] == ["conversation.created", "message.created",
                                          "message.created"]  # fmt: skip
    assert items == client.get("/api/events", params={"chatbot_id": bot["id"]}).json()["items"]
    typed = client.get("/api/events", params={"type": "message.created"})
    assert typed.status_code == 200, typed.text
    assert typed.json()["items"] == items[1:]
    conversation = items[0]["conversation_id"]
    one = client.get("/api/events", params={"conversation_id": conversation})
    assert one.status_code == 200 and one.json()["items"] == items


def _status_changes(client: httpx.Client, bot: dict) -> list[tuple[str, str]]:
    answer = client.get(
        "/api/events",
        params={"chatbot_id": bot["id"], "type": "conversation.status_changed", "limit": 100},
    )
    assert answer.status_code == 200, answer.text
    return [(e["data"]["from"], e["data"]["to"]) for e in answer.json()["items"]]


def test_a_customer_message_that_wakes_a_snooze_announces_it_once(server: LiveServer) -> None:
    """A customer's message wakes a SNOOZED conversation (it is OPEN again), but no
    ``conversation.status_changed`` said so: streams and bots saw the snooze and never its
    end. Now the message's ``message.created`` is followed by SNOOZED -> OPEN, once, even
    when 16 messages of the customer arrive together; a message to an open conversation
    changes nothing."""
    token = server.user()
    client, bot, connection = _bot(server, token)
    conversation = _inbound(client, connection, "m0")["conversation_id"]
    snoozed = client.post(f"/api/conversations/{conversation}/snooze", json={})
    assert snoozed.status_code == 200, snoozed.text
    assert _status_changes(client, bot) == [("OPEN", "SNOOZED")]

    barrier = threading.Barrier(16)

    def deliver(i: int) -> None:
        sender = server.client(token)  # a connection of its own: the 16 really race
        barrier.wait()
        _inbound(sender, connection, f"burst-{i}")

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert client.get(f"/api/conversations/{conversation}").json()["status"] == "OPEN"
    assert _status_changes(client, bot) == [("OPEN", "SNOOZED"), ("SNOOZED", "OPEN")]
    _inbound(client, connection, "after")
    assert _status_changes(client, bot) == [("OPEN", "SNOOZED"), ("SNOOZED", "OPEN")]
    # In the order a reader sees them: the waking message's message.created, then the wake.
    items = client.get("/api/events", params={"chatbot_id": bot["id"], "limit": 100}).json()
    types = [e["type"] for e in items["items"]]
    changes = [i for i, t in enumerate(types) if t == "conversation.status_changed"]
    wake = changes[1]
    assert types[wake - 1] == "message.created"
