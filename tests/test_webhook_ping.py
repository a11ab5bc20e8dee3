"""``POST /api/chatbots/{id}/webhook-ping``: a bot's set-up check, sent now and answered.

On SQLite and PostgreSQL, against the real app and a loopback bot: the ping is signed
like an event and verifies with the chatbot's secret; how the bot answered comes back
(2xx, a refusal with its status and body, no answer at all); it is never stored, queued
or retried; and the address rule holds for it as for every event.
"""

from __future__ import annotations

import json
import socket

import pytest
import sqlalchemy as sa

from noclash.channels import webhooks
from noclash.db.tables import deliveries, events
from tests.support.bots import LoopbackBot, bot_stack, pulled_events, store_webhook_url
from tests.support.outbound import Stack


def _ping(stack: Stack, chatbot_id: str) -> dict:
    answer = stack.api.post(f"/api/chatbots/{chatbot_id}/webhook-ping")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _counts(stack: Stack) -> tuple[int, int]:
    with stack.server.engine.connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar_one(),
        )


def _webhook_bot(stack: Stack, bot: LoopbackBot) -> tuple[dict, str]:
    chatbot = stack.chatbot(webhook_url=bot.url)
    secret = stack.api.post(f"/api/chatbots/{chatbot['id']}/webhook-secret").json()
    return chatbot, secret["webhook_secret"]


def test_a_ping_is_signed_like_an_event_and_never_stored(database_url):
    with bot_stack(database_url) as (stack, bot):
        chatbot, secret = _webhook_bot(stack, bot)
        before = _counts(stack)
        answer = _ping(stack, chatbot["id"])
        assert answer["delivered"] is True and answer["signed"] is True
        assert answer["status_code"] == 200 and answer["error"] is None
        assert answer["duration_ms"] >= 0
        (request,) = bot.requests
        assert request.headers["noclash-event-id"] == answer["event_id"]
        assert webhooks.verify(request.body, request.headers["noclash-signature"], secret)
        body = json.loads(request.body)
        assert body == {
            "id": answer["event_id"], "type": "ping", "chatbot_id": chatbot["id"],
            "conversation_id": None, "created_at": body["created_at"], "data": {},
        }  # fmt: skip
        # Not an event: nothing stored, nothing queued, nothing in the pull API.
        assert _counts(stack) == before
        assert pulled_events(stack, chatbot["id"]) == []
        # Each ping is a new one.
        assert _ping(stack, chatbot["id"])["event_id"] != answer["event_id"]


def test_how_the_bot_refused_comes_back(database_url):
    with bot_stack(database_url, dispatcher=False) as (stack, bot):
        chatbot, _secret = _webhook_bot(stack, bot)
        bot.answer = (503, {"error": "maintenance"})
        refused = _ping(stack, chatbot["id"])
        assert refused["delivered"] is False and refused["status_code"] == 503
        assert refused["error"] == 'the webhook answered 503: {"error":"maintenance"}'
        assert len(bot.requests) == 1  # not retried


def test_a_webhook_that_does_not_answer(database_url):
    with bot_stack(database_url, dispatcher=False) as (stack, _bot):
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        chatbot = stack.chatbot(webhook_url=f"http://127.0.0.1:{port}/hook")
        answer = _ping(stack, chatbot["id"])
        assert answer["delivered"] is False and answer["status_code"] is None
        assert answer["error"].startswith("could not connect")
        assert answer["signed"] is False  # no secret was made


def test_no_webhook_someone_elses_chatbot_and_no_token(database_url):
    with bot_stack(database_url, dispatcher=False) as (stack, bot):
        plain = stack.chatbot()
        none = stack.api.post(f"/api/chatbots/{plain['id']}/webhook-ping")
        assert none.status_code == 409 and none.json()["fields"] == ["webhook_url"]
        assert none.headers["content-type"] == "application/problem+json"
        chatbot, _secret = _webhook_bot(stack, bot)
        stranger = stack.server.client(stack.server.user())
        assert stranger.post(f"/api/chatbots/{chatbot['id']}/webhook-ping").status_code == 404
        anonymous = stack.server.client()
        assert anonymous.post(f"/api/chatbots/{chatbot['id']}/webhook-ping").status_code == 401
        assert stack.api.post("/api/chatbots/not-a-uuid/webhook-ping").status_code == 404
        assert bot.requests == []


def test_a_ping_keeps_the_address_rule(database_url):
    """A webhook_url that leads into noclash's network (written around the API's check, or
    a name whose address changed) is not connected to by a ping either."""
    with bot_stack(database_url, dispatcher=False, allow_private_webhooks=False) as (stack, bot):
        chatbot = stack.chatbot()
        store_webhook_url(stack, chatbot["id"], bot.url)
        answer = _ping(stack, chatbot["id"])
        assert answer["delivered"] is False and answer["status_code"] is None
        assert "loopback" in answer["error"] and answer["error"].startswith("not sent")
        assert bot.requests == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999/hook", "http://xn--/hook", "http://[::1/hook", "not a url"]
)
def test_a_url_no_sender_can_use_is_said_and_not_sent(database_url, url):
    """A webhook_url written around the API's check (another tool, an older version):
    the ping says why it was not sent, a 200 like any refusal, never a 500."""
    with bot_stack(database_url, dispatcher=False) as (stack, _bot):
        chatbot = stack.chatbot()
        store_webhook_url(stack, chatbot["id"], url)
        answer = _ping(stack, chatbot["id"])
        assert answer["delivered"] is False and answer["status_code"] is None
        assert answer["error"].startswith("not sent: webhook_url"), answer["error"]
