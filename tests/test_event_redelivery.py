"""Sending events to a bot again: one (``POST /api/events/{id}/retry``) or every failed one
of a chatbot (``POST /api/chatbots/{id}/events/retry-failed``), and reading where an event
stands with its webhook (``GET /api/events/{id}``).

Every test runs on SQLite and PostgreSQL against the real app, a real dispatcher, the
loopback Telegram (customers write through ``/webhooks/telegram/{id}``) and a loopback
bot that answers as scripted. What a retry must hold: the event goes again with the same
id, signed with the current secret, once per retry however many ask at once, and never a
second delivery row for one event.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import pytest

from noclash.channels import webhooks
from tests.support.bots import LoopbackBot, bot_stack, pulled_events, webhook_deliveries
from tests.support.outbound import Stack
from tests.support.platforms import wait_for

CHAT = 5550177
# The bot refuses; each event fails after this many attempts, quickly.
GIVE_UP = {"webhook_max_attempts": 2, "delivery_backoff_seconds": 0.1,
           "delivery_backoff_max_seconds": 0.1}  # fmt: skip


@pytest.fixture
def failing(database_url):
    """A bot that answers 503 until a test says otherwise, and gives up quickly."""
    with bot_stack(database_url, **GIVE_UP) as (stack, bot):
        bot.answer = (503, {"error": "maintenance"})
        yield stack, bot


def _chatbot(stack: Stack, bot: LoopbackBot, *, webhook: bool = True) -> tuple[dict, dict, str]:
    chatbot = stack.chatbot()
    secret = stack.api.post(f"/api/chatbots/{chatbot['id']}/webhook-secret").json()
    if webhook:
        changed = stack.api.patch(f"/api/chatbots/{chatbot['id']}", json={"webhook_url": bot.url})
        assert changed.status_code == 200, changed.text
    connection, _token = stack.telegram_connection(chatbot["id"])
    return chatbot, connection, secret["webhook_secret"]


def _event(stack: Stack, event_id: str) -> dict:
    answer = stack.api.get(f"/api/events/{event_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _of_type(stack: Stack, chatbot_id: str, type: str) -> list[dict]:
    return [e for e in pulled_events(stack, chatbot_id) if e["type"] == type]


def _retry_at_once(stack: Stack, event_id: str, count: int = 16) -> list[int]:
    """``count`` retries of one event, held at a barrier and released together; their
    statuses. Each 200 is the event queued again (or kept queued); each 409 must be the
    state's (it was claimed or sent meanwhile), never a unique key's: a retry that makes
    the event's first delivery meets the others on ``ON CONFLICT DO NOTHING``, not on a
    refused INSERT."""
    barrier = threading.Barrier(count)
    clients = [stack.server.client(stack.token) for _ in range(count)]

    def retry(client: Any) -> Any:
        barrier.wait()
        return client.post(f"/api/events/{event_id}/retry")

    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(retry, clients))
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["type"].endswith("/conflict"), answer.text
            assert answer.json()["current_status"] in ("sending", "sent"), answer.text
    return [answer.status_code for answer in answers]


def _failed_message_event(stack: Stack, bot: LoopbackBot, update_id: int) -> dict:
    """A customer's message whose events the (refusing) bot never acknowledged: both
    failed; the ``message.created`` event."""
    chatbot, connection, _secret = _chatbot(stack, bot)
    stack.telegram_customer(connection, CHAT, f"message {update_id}", update_id)
    _all_failed(stack, 2)
    return _of_type(stack, chatbot["id"], "message.created")[0]


def _all_failed(stack: Stack, count: int) -> None:
    assert wait_for(
        lambda: [d.status for d in webhook_deliveries(stack)] == ["failed"] * count, 20
    ), webhook_deliveries(stack)


def _status(stack: Stack, event_id: str) -> str | None:
    delivery = _event(stack, event_id)["delivery"]
    return delivery["status"] if delivery else None


def test_a_failed_event_is_sent_again_with_its_id_and_the_current_secret(failing):
    stack, bot = failing
    created = _failed_message_event(stack, bot, 1)
    shown = _event(stack, created["id"])
    # The envelope every reader gets, and where it stands with the webhook.
    assert {k: v for k, v in shown.items() if k != "delivery"} == created
    assert shown["delivery"] == {
        "status": "failed", "attempts": 2, "sent_at": None, "next_attempt_at": None,
        "last_error": 'gave up after 2 attempts: the webhook answered 503: '
                      '{"error":"maintenance"}',
    }  # fmt: skip
    before = len(bot.of_event(created["id"]))
    rotate = f"/api/chatbots/{created['chatbot_id']}/webhook-secret"
    new = stack.api.post(rotate).json()["webhook_secret"]
    bot.answer = None  # the bot is back
    retried = stack.api.post(f"/api/events/{created['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["delivery"]["status"] in ("queued", "sending", "sent")
    assert retried.json()["delivery"]["attempts"] in (0, 1)
    assert wait_for(lambda: _status(stack, created["id"]) == "sent", 20)
    after = _event(stack, created["id"])["delivery"]
    assert after["attempts"] == 1 and after["sent_at"] is not None
    requests = bot.of_event(created["id"])
    assert len(requests) == before + 1
    last = requests[-1]
    assert webhooks.verify(last.body, last.headers["noclash-signature"], new)
    assert last.body == webhooks.encode(created)
    # Acknowledged: not sent again. 409 names the status, and nothing more is sent.
    again = stack.api.post(f"/api/events/{created['id']}/retry")
    assert again.status_code == 409, again.text
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["current_status"] == "sent"
    assert len(bot.of_event(created["id"])) == before + 1


def test_sixteen_retries_at_once_send_the_event_once_more(failing):
    stack, bot = failing
    event = _failed_message_event(stack, bot, 2)
    before = len(bot.of_event(event["id"]))
    bot.answer = None
    codes = _retry_at_once(stack, event['id'])
    assert set(codes) <= {200, 409} and 200 in codes, codes
    assert wait_for(lambda: _status(stack, event["id"]) == "sent", 20)
    assert len(bot.of_event(event["id"])) == before + 1
    assert len(webhook_deliveries(stack)) == 2


def test_an_event_from_before_the_webhook_gets_one_delivery_however_many_ask(database_url):
    with bot_stack(database_url) as (stack, bot):
        chatbot, connection, _secret = _chatbot(stack, bot, webhook=False)
        stack.telegram_customer(connection, CHAT, "before the bot", 3)
        event = _of_type(stack, chatbot["id"], "message.created")[0]
        assert _event(stack, event["id"])["delivery"] is None
        # No webhook yet: nothing to send to.
        refused = stack.api.post(f"/api/events/{event['id']}/retry")
        assert refused.status_code == 409 and refused.json()["fields"] == ["webhook_url"]
        assert stack.api.patch(
            f"/api/chatbots/{chatbot['id']}", json={"webhook_url": bot.url}
        ).status_code == 200
        codes = _retry_at_once(stack, event['id'])
        assert set(codes) <= {200, 409} and 200 in codes, codes
        assert wait_for(lambda: _status(stack, event["id"]) == "sent", 20)
        rows = [d for d in webhook_deliveries(stack) if d.event_id == UUID(event["id"])]
        assert len(rows) == 1
        assert len(bot.of_event(event["id"])) == 1
        # Only that event was asked for: the conversation's own event stays unsent.
        assert [e["id"] for e in bot.events()] == [event["id"]]


def test_retry_failed_sends_every_failed_event_again_in_order(failing):
    stack, bot = failing
    chatbot, connection, _secret = _chatbot(stack, bot)
    for n in range(3):
        stack.telegram_customer(connection, CHAT, f"part {n}", 10 + n)
    _all_failed(stack, 4)
    stored = [e for e in pulled_events(stack, chatbot["id"]) if e["type"] != "delivery.failed"]
    assert len(stored) == 4
    bot.answer = None
    seen = len(bot.requests)
    # Only the events after the second: two.
    after = stack.api.post(
        f"/api/chatbots/{chatbot['id']}/events/retry-failed", json={"after": stored[1]["id"]}
    )
    assert after.status_code == 200 and after.json() == {"requeued": 2}, after.text
    assert wait_for(lambda: [_status(stack, e["id"]) for e in stored[2:]] == ["sent"] * 2, 20)
    assert [_status(stack, e["id"]) for e in stored[:2]] == ["failed"] * 2
    # Then the rest; a repeat queues nothing more.
    rest = stack.api.post(f"/api/chatbots/{chatbot['id']}/events/retry-failed")
    assert rest.status_code == 200 and rest.json() == {"requeued": 2}, rest.text
    assert wait_for(lambda: {_status(stack, e["id"]) for e in stored} == {"sent"}, 20)
    repeat = stack.api.post(f"/api/chatbots/{chatbot['id']}/events/retry-failed", json={})
    assert repeat.status_code == 200 and repeat.json() == {"requeued": 0}
    again = [e["id"] for e in bot.events()[seen:]]
    assert again == [e["id"] for e in stored[2:]] + [e["id"] for e in stored[:2]]
    # The failures were announced to the pull API, never to the bot.
    assert "delivery.failed" not in {e["type"] for e in bot.events()}


def test_what_cannot_be_retried_is_a_clear_4xx(failing):
    stack, bot = failing
    chatbot, connection, _secret = _chatbot(stack, bot)
    stack.telegram_customer(connection, CHAT, "hi", 20)
    _all_failed(stack, 2)
    failures = _of_type(stack, chatbot["id"], "delivery.failed")
    assert len(failures) == 2
    # A webhook's failure is never sent to the webhook.
    never = stack.api.post(f"/api/events/{failures[0]['id']}/retry")
    assert never.status_code == 409 and never.json()["fields"] == ["type"], never.text
    assert _event(stack, failures[0]["id"])["delivery"] is None
    # Someone else's, a malformed id, no token.
    event = pulled_events(stack, chatbot["id"])[0]["id"]
    stranger = stack.server.client(stack.server.user())
    assert stranger.get(f"/api/events/{event}").status_code == 404
    assert stranger.post(f"/api/events/{event}/retry").status_code == 404
    assert stranger.post(f"/api/chatbots/{chatbot['id']}/events/retry-failed").status_code == 404
    assert stack.api.get("/api/events/not-a-uuid").status_code == 404
    assert stack.api.post("/api/events/not-a-uuid/retry").status_code == 404
    assert stack.server.client().post(f"/api/events/{event}/retry").status_code == 401
    # retry-failed: an unknown or malformed ``after``, a field it does not take.
    url = f"/api/chatbots/{chatbot['id']}/events/retry-failed"
    unknown = stack.api.post(url, json={"after": "0193a7f0-0000-7000-8000-000000000000"})
    assert unknown.status_code == 404, unknown.text
    malformed = stack.api.post(url, json={"after": "yesterday"})
    assert malformed.status_code == 422 and "after" in malformed.text
    assert stack.api.post(url, json={"status": "failed"}).status_code == 422
    # Without a webhook there is nowhere to send them: 409, and nothing is queued.
    assert stack.api.patch(
        f"/api/chatbots/{chatbot['id']}", json={"webhook_url": None}
    ).status_code == 200
    nowhere = stack.api.post(url)
    assert nowhere.status_code == 409 and nowhere.json()["fields"] == ["webhook_url"]
    assert {d.status for d in webhook_deliveries(stack)} == {"failed"}
