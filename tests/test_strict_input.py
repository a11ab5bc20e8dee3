"""Strict input over real HTTP on SQLite and PostgreSQL: nothing lenient, nothing a 500.

- times at the edges of the calendar, numbers as times, naive times: a 422 naming the field,
  never an ``OverflowError`` and never a time the client did not write;
- JSON types are not coerced (``"yes"`` is no boolean, ``"5"`` no number);
- text is stored exactly as sent, its length counted as sent (nothing trimmed first);
- a NUL in a query or path parameter is the same 422 on both databases;
- the framework's own answers are typed problems: an unknown route is ``not-found``, a
  405's ``Allow`` names every method of the path;
- a chunked body over the limit is the 413 of a declared one.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from noclash.db.tables import chatbots, conversations, messages

PROBLEM = "application/problem+json"
EDGES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
NOT_TIMES = [0, 1700000000, "0", "1700000000", "2026-01-01", "2026-01-01T10:00:00", True, 1.5]


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def _fields(response, status: int = 422) -> set[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "Traceback" not in response.text
    return {f["field"] for f in response.json().get("fields") or []}


@pytest.fixture
def setup(live_server):
    client = live_server.client(live_server.user())
    bot = client.post("/api/chatbots", json={"name": "b"}).json()
    connection = client.post(
        f"/api/chatbots/{bot['id']}/connections", json={"channel": "custom", "external_id": "sms"}
    ).json()
    conversation = client.post(f"/api/chatbots/{bot['id']}/conversations", json={}).json()
    return live_server, client, bot, connection, conversation


def test_times_outside_utc_or_not_rfc3339_are_a_422_naming_the_field(setup):
    live, client, _bot, connection, conversation = setup
    inbound = f"/api/connections/{connection['id']}/inbound"
    snooze = f"/api/conversations/{conversation['id']}/snooze"
    for i, value in enumerate(EDGES + NOT_TIMES):
        body = {"psid": "p", "message_id": f"m{i}", "text": "hi", "sent_at": value}
        assert _fields(client.post(inbound, json=body)) == {"sent_at"}, value
        assert _fields(client.post(snooze, json={"until": value})) == {"until"}, value
    assert _count(live.engine, messages) == 0
    got = client.get(f"/api/conversations/{conversation['id']}").json()
    assert got["status"] == "OPEN" and got["snoozed_until"] is None


def test_times_inside_the_calendar_are_stored_in_utc(setup):
    _live, client, _bot, connection, conversation = setup
    inbound = f"/api/connections/{connection['id']}/inbound"
    body = {"psid": "p", "message_id": "m1", "text": "hi", "sent_at": "0001-01-01T00:00:00Z"}
    assert client.post(inbound, json=body).status_code == 201
    body = {"psid": "p", "message_id": "m2", "text": "hi", "sent_at": "2026-01-01T10:00:00+14:00"}
    stored = client.post(inbound, json=body).json()
    listed = client.get(f"/api/conversations/{stored['conversation_id']}/messages").json()
    assert [m["sent_at"] for m in listed["items"]] == [
        "0001-01-01T00:00:00Z",
        "2025-12-31T20:00:00Z",
    ]
    until = "9999-12-31T23:59:59+00:00"
    snoozed = client.post(f"/api/conversations/{conversation['id']}/snooze", json={"until": until})
    assert snoozed.status_code == 200, snoozed.text
    assert snoozed.json()["snoozed_until"] == "9999-12-31T23:59:59Z"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "require_auth": "yes"}, "require_auth"),
        ({"name": "x", "require_auth": "true"}, "require_auth"),
        ({"name": "x", "require_auth": 1}, "require_auth"),
        ({"name": 5}, "name"),
        ({"name": ["x"]}, "name"),
        ({"name": "x", "slack_channel_id": 12}, "slack_channel_id"),
        ({"name": "   "}, "name"),
        # 201 characters as sent: a trim before the length check would have let it in.
        ({"name": " " + "x" * 200}, "name"),
    ],
)
def test_json_types_are_not_coerced_and_text_is_not_trimmed(live_server, body, field):
    client = live_server.client(live_server.user())
    assert _fields(client.post("/api/chatbots", json=body)) == {field}
    assert _count(live_server.engine, chatbots) == 0


def test_text_is_stored_as_sent(setup):
    _live, client, bot, connection, _conversation = setup
    made = client.post("/api/chatbots", json={"name": "  Support  ", "require_auth": False})
    assert made.status_code == 201 and made.json()["name"] == "  Support  "
    renamed = client.patch(f"/api/chatbots/{bot['id']}", json={"name": " x" * 100})
    assert renamed.status_code == 200 and renamed.json()["name"] == " x" * 100
    body = {"psid": " p ", "message_id": "m1", "text": "  two spaces  "}
    stored = client.post(f"/api/connections/{connection['id']}/inbound", json=body).json()
    conversation = client.get(f"/api/conversations/{stored['conversation_id']}").json()
    assert conversation["psid"] == " p "
    listed = client.get(f"/api/conversations/{stored['conversation_id']}/messages").json()
    assert listed["items"][0]["text"] == "  two spaces  "


def test_a_nul_in_a_query_or_path_parameter_is_the_same_422_on_both_databases(setup):
    _live, client, bot, connection, conversation = setup
    cases = [
        ("GET", "/api/conversations", {"psid": "a\x00b"}, "psid"),
        ("GET", "/api/conversations", {"status": "OPEN\x00"}, "status"),
        ("GET", "/api/conversations", {"cursor": "\x00"}, "cursor"),
        ("GET", "/api/chatbots", {"cursor": "x\x00"}, "cursor"),
        ("GET", f"/api/chatbots/{bot['id']}/conversations/by-slug/a%00b", None, "slug"),
        ("GET", "/api/chatbots/a%00b", None, "chatbot_id"),
        ("POST", f"/api/conversations/{conversation['id']}%00/close", None, "conversation_id"),
        ("GET", f"/api/connections/{connection['id']}%00", None, "connection_id"),
    ]
    for method, path, params, field in cases:
        r = client.request(method, path, params=params)
        assert _fields(r) == {field}, (path, params)


def test_unknown_routes_and_methods_are_typed_problems(setup):
    _live, client, bot, _connection, conversation = setup
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert missing.json()["type"] == "https://noclash.dev/problems/not-found"
    for path, allowed in [
        ("/api/chatbots", "GET, HEAD, POST"),
        (f"/api/chatbots/{bot['id']}", "DELETE, GET, HEAD, PATCH"),
        (f"/api/conversations/{conversation['id']}", "GET, HEAD, PATCH"),
        (f"/api/conversations/{conversation['id']}/close", "POST"),
    ]:
        r = client.put(path, json={})
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == allowed, path
        assert r.json()["type"] == "https://noclash.dev/problems/method-not-allowed"


def test_a_chunked_body_over_the_limit_is_the_413(live_server):
    client = live_server.client(live_server.user())
    limit = live_server.settings.max_body_bytes
    chunk = b" " * 4096

    def body():
        yield b'{"name": "x"'
        for _ in range(limit // len(chunk) + 2):
            yield chunk
        yield b"}"

    r = client.post("/api/chatbots", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["type"] == "https://noclash.dev/problems/body-too-large"
    assert _count(live_server.engine, chatbots) == 0


def test_conversation_bodies_are_strict_too(setup):
    live, client, bot, _connection, conversation = setup
    before = _count(live.engine, conversations)
    create = f"/api/chatbots/{bot['id']}/conversations"
    assert _fields(client.post(create, json={"psid": 5})) == {"psid"}
    assert _fields(client.post(create, json={"psid": "  "})) == {"psid"}
    assert _fields(client.post(create, json={"title": False})) == {"title"}
    rename = client.patch(f"/api/conversations/{conversation['id']}", json={"title": 7})
    assert _fields(rename) == {"title"}
    assert _count(live.engine, conversations) == before


def test_head_is_answered_as_get_without_a_body(setup):
    """Every GET also answers HEAD (its 405 said "Allow: GET, HEAD" and refused it): the
    same status and headers, no body; an event stream's HEAD ends at its head."""
    _live, client, bot, _connection, _conversation = setup
    for path in [
        "/healthz",
        "/readyz",
        "/api/chatbots",
        f"/api/chatbots/{bot['id']}",
        f"/api/public/chatbots/{bot['public_token']}",
        "/inbox",
        "/widget.js",
        "/static/inbox.css",
        f"/widget/demo/{bot['public_token']}",
    ]:
        got, head = client.get(path), client.head(path)
        assert (head.status_code, got.status_code) == (200, 200), path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert client.head("/api/nothing-here").status_code == 404
    stream = client.head("/api/stream", params={"chatbot_id": bot["id"]}, timeout=10)
    assert stream.status_code == 200 and stream.content == b""
    assert stream.headers["content-type"].startswith("text/event-stream")
    # At its head: not at the first keep-alive ping, 15 s later (nor does the next request
    # on the connection wait that long).
    assert stream.elapsed.total_seconds() < 5
    # The pages, outside the API's description, name their methods in a 405 too.
    refused = client.delete("/inbox")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert client.post("/static/inbox.css").headers["allow"] == "GET, HEAD"


def test_the_lists_that_start_after_an_id_take_cursor_too(setup):
    """GET /api/events and a widget session's messages page by ``after``; ``cursor``, the
    name every other list takes for next_cursor, was ignored there, so a generic paginator
    fetched the first page forever. Given both, the cursor wins."""
    _live, client, bot, connection, _conversation = setup
    for n in range(3):
        body = {"psid": "pager", "message_id": f"p-{n}", "text": f"page {n}"}
        assert client.post(f"/api/connections/{connection['id']}/inbound", json=body).is_success
    session = client.post(f"/api/widget/{bot['public_token']}/sessions", json={}).json()
    messages = f"/api/widget/{bot['public_token']}/sessions/{session['session_id']}/messages"
    for n in range(3):
        assert client.post(messages, json={"text": f"visitor {n}"}).status_code == 201
    for path, params in [
        ("/api/events", {"chatbot_id": bot["id"]}),
        (messages, {}),
    ]:
        seen, cursor = [], None
        while True:
            query = {**params, "limit": 1} | ({"cursor": cursor} if cursor else {})
            page = client.get(path, params=query).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None or len(seen) > 20:
                break
        everything = client.get(path, params={**params, "limit": 200}).json()["items"]
        assert seen == [item["id"] for item in everything], path
        # A paginator that keeps the first request's after and adds the cursor goes on
        # from the cursor.
        both = client.get(path, params={**params, "after": seen[0], "cursor": seen[1]})
        assert [item["id"] for item in both.json()["items"]] == seen[2:], path
