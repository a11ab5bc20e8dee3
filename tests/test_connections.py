"""Connections and the generic inbound endpoint, over real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest


def _bot(client) -> str:
    response = client.post("/api/chatbots", json={"name": "support"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


def test_create_get_list(live_server):
    client = live_server.client(live_server.user())
    bot = _bot(client)
    created = client.post(
        f"/api/chatbots/{bot}/connections",
        json={"channel": "telegram", "external_id": "123456", "secret": "s3cret"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["channel"] == "telegram" and body["has_secret"] is True
    assert "secret" not in body
    assert client.get(f"/api/connections/{body['id']}").json() == body
    listed = client.get(f"/api/chatbots/{bot}/connections").json()
    assert listed == {"items": [body], "next_cursor": None}


def test_same_channel_and_external_id_is_409_naming_both(live_server):
    client = live_server.client(live_server.user())
    bot = _bot(client)
    other_user = live_server.client(live_server.user())
    other_bot = _bot(other_user)
    spec = {"channel": "messenger", "external_id": "PAGE-1"}
    assert client.post(f"/api/chatbots/{bot}/connections", json=spec).status_code == 201
    for c, b in ((client, bot), (other_user, other_bot)):
        problem = _problem(c.post(f"/api/chatbots/{b}/connections", json=spec), 409)
        assert problem["fields"] == ["channel", "external_id"]
    # The same page id on another channel is another connection.
    spec["channel"] = "instagram"
    assert client.post(f"/api/chatbots/{bot}/connections", json=spec).status_code == 201


def test_concurrent_creates_one_wins_rest_409(live_server):
    token = live_server.user()
    bot = _bot(live_server.client(token))
    n = 12
    barrier = threading.Barrier(n)
    client = live_server.client(token)

    def create(_):
        barrier.wait()
        return client.post(
            f"/api/chatbots/{bot}/connections", json={"channel": "custom", "external_id": "w"}
        ).status_code

    with ThreadPoolExecutor(n) as pool:
        codes = sorted(pool.map(create, range(n)))
    assert codes == [201] + [409] * (n - 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "sms", "external_id": "x"}, "channel"),
        ({"channel": "messenger", "external_id": ""}, "external_id"),
        ({"channel": "telegram", "external_id": "bot"}, "secret"),
        ({"channel": "messenger", "external_id": "x", "extra": 1}, "extra"),
    ],
)
def test_bad_input_is_422(live_server, body, field):
    client = live_server.client(live_server.user())
    bot = _bot(client)
    problem = _problem(client.post(f"/api/chatbots/{bot}/connections", json=body), 422)
    assert any(field in f["field"] for f in problem["fields"])
    assert client.get(f"/api/chatbots/{bot}/connections").json()["items"] == []


def test_other_users_records_are_404(live_server):
    owner = live_server.client(live_server.user())
    bot = _bot(owner)
    conn_id = owner.post(
        f"/api/chatbots/{bot}/connections", json={"channel": "custom", "external_id": "w1"}
    ).json()["id"]
    stranger = live_server.client(live_server.user())
    spec = {"channel": "custom", "external_id": "w2"}
    _problem(stranger.post(f"/api/chatbots/{bot}/connections", json=spec), 404)
    _problem(stranger.get(f"/api/connections/{conn_id}"), 404)
    _problem(stranger.get("/api/connections/not-a-uuid"), 404)
    message = {"psid": "p", "message_id": "m", "text": "hi"}
    _problem(stranger.post(f"/api/connections/{conn_id}/inbound", json=message), 404)
    _problem(live_server.client().get(f"/api/connections/{conn_id}"), 401)


def test_generic_inbound_reports_duplicates(live_server):
    client = live_server.client(live_server.user())
    bot = _bot(client)
    conn_id = client.post(
        f"/api/chatbots/{bot}/connections", json={"channel": "custom", "external_id": "site"}
    ).json()["id"]
    message = {"psid": "visitor-1", "message_id": "c-1", "text": "Hello!", "username": "Ada",
               "sent_at": "2026-01-01T10:00:00+01:00"}  # fmt: skip
    first = client.post(f"/api/connections/{conn_id}/inbound", json=message)
    assert first.status_code == 201, first.text
    assert first.json()["duplicate"] is False and first.json()["created_conversation"] is True
    again = client.post(f"/api/connections/{conn_id}/inbound", json=message)
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True, "created_conversation": False}
    conv = client.get(f"/api/conversations/{first.json()['conversation_id']}").json()
    assert conv["title"] == "Ada" and conv["status"] == "OPEN"
    assert conv["last_message_at"].startswith("2026-01-01T09:00:00")
    _problem(client.post(f"/api/connections/{conn_id}/inbound",
                         json={**message, "message_id": "c-2", "sent_at": "2026-01-01T10:00:00"}),
             422)  # fmt: skip
    msgs = client.get(f"/api/conversations/{first.json()['conversation_id']}/messages").json()
    assert [m["platform_message_id"] for m in msgs["items"]] == ["c-1"]


def test_concurrent_generic_inbound_for_one_customer(live_server):
    """32 clients held at a barrier post a new customer's messages through the real server,
    every other one a redelivery: only 201 or 200, one conversation, each message stored
    once, and last_message_at at the newest message however the touches interleaved."""
    token = live_server.user()
    client = live_server.client(token)
    bot = _bot(client)
    conn_id = client.post(
        f"/api/chatbots/{bot}/connections", json={"channel": "custom", "external_id": "burst"}
    ).json()["id"]
    n = 32
    barrier = threading.Barrier(n)

    def post(i):
        message = {"psid": "visitor-9", "message_id": f"c-{i // 2}", "text": f"hi {i // 2}",
                   "sent_at": f"2026-01-01T10:00:{i // 2:02d}+00:00"}  # fmt: skip
        with live_server.client(token) as own:
            barrier.wait()
            response = own.post(f"/api/connections/{conn_id}/inbound", json=message)
        return response.status_code, response.json()

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(post, range(n)))
    assert {code for code, _ in answers} <= {200, 201}, answers
    assert len({body["conversation_id"] for _, body in answers}) == 1
    assert sum(not body["duplicate"] for _, body in answers) == n // 2
    conversation = answers[0][1]["conversation_id"]
    stored = client.get(f"/api/conversations/{conversation}/messages?limit=100").json()["items"]
    assert sorted(m["platform_message_id"] for m in stored) == sorted(
        f"c-{k}" for k in range(n // 2)
    )
    conv = client.get(f"/api/conversations/{conversation}").json()
    assert conv["last_message_at"].startswith(f"2026-01-01T10:00:{n // 2 - 1:02d}")
