"""Widget sessions over real HTTP on SQLite and PostgreSQL (seed 003 done right)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from noclash.db.dialects import dialect_for
from noclash.db.tables import connections, conversations, messages, sessions
from noclash.db.types import utcnow
from noclash.unique import uuid7

PROBLEM = "application/problem+json"


def _bot(live_server, **body) -> tuple[httpx.Client, dict]:
    owner = live_server.client(live_server.user())
    r = owner.post("/api/chatbots", json={"name": "Shop", **body})
    assert r.status_code == 201, r.text
    return owner, r.json()


def _scalar(engine, sql: str):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


def test_start_session_makes_the_id_on_the_server(live_server):
    _owner, bot = _bot(live_server)
    visitor = live_server.client()
    # A client-chosen session id is not an input: the body is ignored.
    r = visitor.post(f"/api/widget/{bot['public_token']}/sessions", json={"session_id": "mine"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"conversation_id", "session_id"}
    assert uuid.UUID(body["session_id"]).version == 4
    with live_server.engine.connect() as conn:
        row = conn.execute(
            sa.select(sessions).where(sessions.c.session_id == uuid.UUID(body["session_id"]))
        ).one()
        conv = conn.execute(
            sa.select(conversations).where(conversations.c.id == row.conversation_id)
        ).one()
        channel = conn.execute(
            sa.select(connections.c.channel, connections.c.external_id).where(
                connections.c.id == row.connection_id
            )
        ).one()
    assert str(row.conversation_id) == body["conversation_id"]
    assert conv.psid == body["session_id"] and conv.connection_id == row.connection_id
    assert tuple(channel) == ("widget", bot["public_token"])


def test_session_id_default_and_not_null_are_in_the_schema(engine):
    """PostgreSQL makes the UUIDv4 itself; on both, NULL is refused by NOT NULL (the seed's
    'second null collides on the unique index' cannot happen)."""
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("sessions")}
    default = str(columns["session_id"]["default"] or "")
    assert ("gen_random_uuid" in default) == dialect_for(engine).server_generates_uuid4
    assert columns["session_id"]["nullable"] is False
    from tests.support.factories import make_chatbot, make_connection

    bot = make_chatbot(engine)
    link = make_connection(engine, bot.id, channel="widget", external_id=str(bot.public_token))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            sa.insert(sessions).values(
                id=uuid7(),
                session_id=None,
                chatbot_id=bot.id,
                connection_id=link.id,
                created_at=utcnow(),
            )
        )


def test_200_concurrent_session_starts(live_server):
    """32 clients held at a barrier start 200 sessions on one chatbot: all 201, 200
    distinct non-null ids, one widget connection; the seed's checks hold in SQL."""
    _owner, bot = _bot(live_server)
    clients, total = 32, 200
    barrier = threading.Barrier(clients)
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    url = f"/api/widget/{bot['public_token']}/sessions"

    def run(i: int) -> list[httpx.Response]:
        with httpx.Client(base_url=live_server.base_url, timeout=60) as client:
            barrier.wait()
            return [client.post(url) for _ in range(per_client[i])]

    with ThreadPoolExecutor(clients) as pool:
        responses = [r for batch in pool.map(run, range(clients)) for r in batch]
    assert [r.status_code for r in responses] == [201] * total, {r.text for r in responses}
    ids = {r.json()["session_id"] for r in responses}
    assert len(ids) == total and None not in ids
    assert len({r.json()["conversation_id"] for r in responses}) == total
    engine = live_server.engine
    # db.conversations.find({sessionId: null}).count() == 0, and every id unique:
    assert _scalar(engine, "SELECT count(*) FROM sessions WHERE session_id IS NULL") == 0
    assert _scalar(engine, "SELECT count(*) FROM sessions") == total
    assert _scalar(engine, "SELECT count(DISTINCT session_id) FROM sessions") == total
    assert (
        _scalar(
            engine,
            "SELECT count(*) FROM (SELECT session_id FROM sessions "
            "GROUP BY session_id HAVING count(*) > 1) AS dup",
        )
        == 0
    )
    assert _scalar(engine, "SELECT count(*) FROM connections WHERE channel = 'widget'") == 1


@pytest.mark.parametrize(
    "token", ["not-a-uuid", "00000000-0000-4000-8000-000000000000", "1' OR '1'='1"]
)
def test_unknown_or_malformed_token_is_404(live_server, token):
    r = live_server.client().post(f"/api/widget/{token}/sessions")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


def test_require_auth_needs_a_bearer_token(live_server):
    _owner, bot = _bot(live_server, require_auth=True)
    url = f"/api/widget/{bot['public_token']}/sessions"
    r = live_server.client().post(url)
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    assert _scalar(live_server.engine, "SELECT count(*) FROM sessions") == 0
    signed_in = live_server.client(live_server.user())
    started = signed_in.post(url)
    assert started.status_code == 201
    sid = started.json()["session_id"]
    msg = f"{url}/{sid}/messages"
    assert live_server.client().post(msg, json={"text": "hi"}).status_code == 401
    assert signed_in.post(msg, json={"text": "hi"}).status_code == 201


def _session(live_server) -> tuple[dict, dict, str]:
    _owner, bot = _bot(live_server)
    base = f"/api/widget/{bot['public_token']}/sessions"
    started = live_server.client().post(base).json()
    return bot, started, f"{base}/{started['session_id']}/messages"


def _messages(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one()


def test_messages_store_and_dedupe_on_client_message_id(live_server):
    _b, started, url = _session(live_server)
    visitor = live_server.client()
    first = visitor.post(url, json={"text": "Where is my order?", "client_message_id": "m1"})
    again = visitor.post(url, json={"text": "Where is my order?", "client_message_id": "m1"})
    other = visitor.post(url, json={"text": "Hello?"})
    assert first.status_code == 201 and again.status_code == 200 and other.status_code == 201
    assert first.json()["conversation_id"] == started["conversation_id"]
    assert again.json() == {**first.json(), "duplicate": True}
    assert _messages(live_server.engine) == 2
    with live_server.engine.connect() as conn:
        row = conn.execute(
            sa.select(conversations.c.last_message_at, conversations.c.slug).where(
                conversations.c.id == uuid.UUID(started["conversation_id"])
            )
        ).one()
    assert row.last_message_at is not None


def test_client_message_ids_are_scoped_to_the_session(live_server):
    """Two visitors both sending client_message_id "1" both get their message stored."""
    _owner, bot = _bot(live_server)
    base = f"/api/widget/{bot['public_token']}/sessions"
    visitor = live_server.client()
    a = visitor.post(base).json()["session_id"]
    b = visitor.post(base).json()["session_id"]
    ra = visitor.post(f"{base}/{a}/messages", json={"text": "x", "client_message_id": "1"})
    rb = visitor.post(f"{base}/{b}/messages", json={"text": "y", "client_message_id": "1"})
    assert ra.status_code == rb.status_code == 201
    assert ra.json()["conversation_id"] != rb.json()["conversation_id"]


def test_concurrent_resends_store_one_message(live_server):
    _b, _started, url = _session(live_server)
    n = 16
    barrier = threading.Barrier(n)

    def run(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_server.base_url, timeout=60) as client:
            barrier.wait()
            return client.post(url, json={"text": "once", "client_message_id": "c-1"})

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(run, range(n)))
    assert sorted(r.status_code for r in responses) == [200] * (n - 1) + [201]
    assert len({r.json()["message_id"] for r in responses}) == 1
    assert _messages(live_server.engine) == 1


def test_unknown_session_or_foreign_token_is_404(live_server):
    bot, started, _url = _session(live_server)
    _owner, other = _bot(live_server)
    visitor = live_server.client()
    sid = started["session_id"]
    for path in (
        f"/api/widget/{bot['public_token']}/sessions/{uuid.uuid4()}/messages",
        f"/api/widget/{bot['public_token']}/sessions/not-a-uuid/messages",
        f"/api/widget/{other['public_token']}/sessions/{sid}/messages",
    ):
        r = visitor.post(path, json={"text": "hi"})
        assert r.status_code == 404, path
        assert r.headers["content-type"] == PROBLEM
    assert _messages(live_server.engine) == 0


def test_input_limits_are_clear_4xx_and_store_nothing(live_server):
    _b, _started, url = _session(live_server)
    visitor = live_server.client()
    limit = live_server.settings.max_text_length
    cases = [
        ({"json": {"text": "x" * (limit + 1)}}, 422, "text"),
        ({"json": {"text": "   "}}, 422, "text"),
        ({"json": {"text": "hi", "client_message_id": "c" * 201}}, 422, "client_message_id"),
        ({"json": {"text": "hi", "extra": 1}}, 422, "extra"),
        ({"json": {}}, 422, "text"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, None),
        ({"json": {"text": "x" * (live_server.settings.max_body_bytes + 1)}}, 413, None),
    ]
    for kwargs, status, field in cases:
        r = visitor.post(url, **kwargs)
        assert r.status_code == status, (kwargs.get("json"), r.text)
        assert r.headers["content-type"] == PROBLEM
        if field:
            assert field in {f["field"] for f in r.json()["fields"]}
    assert visitor.post(url, json={"text": "x" * limit}).status_code == 201
    assert _messages(live_server.engine) == 1


def test_a_closed_session_conversation_is_followed_by_a_new_one(live_server):
    """After an agent closes the visitor's conversation, the next message starts the
    visitor's next conversation (through the inbound claim) and the session follows it."""
    owner, bot = _bot(live_server)
    base = f"/api/widget/{bot['public_token']}/sessions"
    visitor = live_server.client()
    started = visitor.post(base).json()
    url = f"{base}/{started['session_id']}/messages"
    assert visitor.post(url, json={"text": "first"}).status_code == 201
    closed = owner.post(f"/api/conversations/{started['conversation_id']}/close")
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"
    second = visitor.post(url, json={"text": "second"})
    third = visitor.post(url, json={"text": "third"})
    assert second.status_code == third.status_code == 201
    assert second.json()["conversation_id"] != started["conversation_id"]
    assert third.json()["conversation_id"] == second.json()["conversation_id"]
    with live_server.engine.connect() as conn:
        linked = conn.execute(
            sa.select(sessions.c.conversation_id).where(
                sessions.c.session_id == uuid.UUID(started["session_id"])
            )
        ).scalar_one()
    assert str(linked) == second.json()["conversation_id"]


def test_the_longest_client_message_id_fits_the_dedupe_key():
    """The dedupe key is ``<session id>:<client id>`` in ``platform_message_id``: the
    longest client id the widget accepts must fit, or a visitor's message could not be
    stored at all."""
    from noclash.chat.sessions import MAX_CLIENT_MESSAGE_ID_LENGTH
    from noclash.db.tables import max_length

    prefix = len(f"{uuid.uuid4()}:")
    assert prefix + MAX_CLIENT_MESSAGE_ID_LENGTH <= max_length(messages.c.platform_message_id)
