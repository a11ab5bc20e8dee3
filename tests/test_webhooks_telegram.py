"""Telegram webhooks through the real HTTP server, with the documented Update example."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from noclash.db.tables import conversations, messages
from tests.channels import raw

SECRET = "telegram-secret-token"


@pytest.fixture
def telegram(live_server):
    client = live_server.client(live_server.user())
    bot = client.post("/api/chatbots", json={"name": "b"}).json()["id"]
    response = client.post(
        f"/api/chatbots/{bot}/connections",
        json={"channel": "telegram", "external_id": "bot-123", "secret": SECRET},
    )
    assert response.status_code == 201, response.text
    return client, response.json()["id"]


def _post(live_server, conn_id, body: bytes, token: str | None = SECRET):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = token
    return live_server.client().post(f"/webhooks/telegram/{conn_id}", content=body, headers=headers)


def _counts(live_server):
    with live_server.engine.connect() as conn:
        return tuple(
            conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
            for t in (conversations, messages)
        )


def test_documented_update_becomes_one_message(live_server, telegram):
    client, conn_id = telegram
    body = raw("telegram_message")
    first = _post(live_server, conn_id, body)
    assert first.status_code == 200, first.text
    assert first.json() == {"stored": 1, "duplicates": 0, "ignored": 0, "invalid": 0}
    assert _post(live_server, conn_id, body).json()["duplicates"] == 1  # redelivery
    (conv,) = client.get("/api/conversations").json()["items"]
    assert conv["psid"] == "1111111" and conv["title"] == "Test"
    assert conv["last_message_at"].startswith("2015-09-07T17:05:32")
    (msg,) = client.get(f"/api/conversations/{conv['id']}/messages").json()["items"]
    assert msg["platform_message_id"] == "1111111:1365" and msg["text"] == "/start"


def test_a_lone_surrogate_is_stored_as_a_replacement_not_a_500(live_server, telegram):
    """JSON can escape half of a UTF-16 pair ("\\ud83d" alone), which no database can
    store: the update is stored with U+FFFD in its place (the username and the text),
    and its redelivery is recognised, so Telegram never gets an error to retry."""
    client, conn_id = telegram
    body = raw("telegram_message").replace(b'"/start"', b'"hi \\ud83d"').replace(
        b'"Test"', b'"T\\udc00"'
    )
    assert b"\\ud83d" in body and b"\\udc00" in body
    first = _post(live_server, conn_id, body)
    assert first.status_code == 200, first.text
    assert first.json()["stored"] == 1
    assert _post(live_server, conn_id, body).json()["duplicates"] == 1
    (conv,) = client.get("/api/conversations").json()["items"]
    assert conv["title"] == "T\ufffd"
    (msg,) = client.get(f"/api/conversations/{conv['id']}/messages").json()["items"]
    assert msg["text"] == "hi \ufffd"


def test_other_updates_are_acknowledged(live_server, telegram):
    _client, conn_id = telegram
    response = _post(live_server, conn_id, raw("telegram_edited_message"))
    assert response.status_code == 200 and response.json()["ignored"] == 1
    assert _counts(live_server) == (0, 0)


@pytest.mark.parametrize("token", [None, "wrong", SECRET + "x", SECRET.upper()])
def test_bad_secret_is_401_and_stores_nothing(live_server, telegram, token):
    _client, conn_id = telegram
    response = _post(live_server, conn_id, raw("telegram_message"), token=token)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert _counts(live_server) == (0, 0)


def test_unknown_or_non_telegram_connection_is_404(live_server, telegram):
    client, _conn_id = telegram
    bot = client.post("/api/chatbots", json={"name": "c"}).json()["id"]
    page = client.post(
        f"/api/chatbots/{bot}/connections",
        json={"channel": "messenger", "external_id": "p", "secret": SECRET},
    ).json()["id"]
    for target in (page, "00000000-0000-7000-8000-000000000000", "nope"):
        assert _post(live_server, target, raw("telegram_message")).status_code == 404
    assert _counts(live_server) == (0, 0)


def test_malformed_update_is_400(live_server, telegram):
    _client, conn_id = telegram
    assert _post(live_server, conn_id, b"[]").status_code == 400
    bad = json.loads(raw("telegram_message"))
    del bad["message"]["chat"]
    assert _post(live_server, conn_id, json.dumps(bad).encode()).status_code == 400
    assert _counts(live_server) == (0, 0)
