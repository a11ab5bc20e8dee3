"""``webhook_events``: the event types a chatbot's webhook is sent.

On SQLite and PostgreSQL against the real app, a real dispatcher, the loopback Telegram
(customers write through the real webhook, so both ways an inbound message writes its
events are taken: in the message's own statement on PostgreSQL, after it on SQLite) and
a loopback bot. A type left out never gets a webhook delivery; every event is still in
the pull API; null is every type, as before.
"""

from __future__ import annotations

import time

import pytest

from noclash.chat import events
from noclash.chat.events import EventType
from tests.support.bots import bot_stack, pulled_events, webhook_deliveries
from tests.support.platforms import TELEGRAM_BLOCKED, wait_for

CHAT = 5550177


@pytest.fixture
def both(database_url):
    with bot_stack(database_url) as pair:
        yield pair


def _chatbot(stack, bot, **settings) -> tuple[dict, dict]:
    chatbot = stack.chatbot(webhook_url=bot.url, **settings)
    connection, _token = stack.telegram_connection(chatbot["id"])
    return chatbot, connection


def test_only_the_types_asked_for_reach_the_webhook(both):
    stack, bot = both
    chatbot, connection = _chatbot(stack, bot, webhook_events=["message.created"])
    assert chatbot["webhook_events"] == ["message.created"]
    conversation = stack.telegram_customer(connection, CHAT, "hello", 7001)
    closed = stack.api.post(f"/api/conversations/{conversation['id']}/close")
    assert closed.status_code == 200, closed.text
    stack.telegram_customer(connection, CHAT, "again", 7002)  # a new conversation
    assert wait_for(lambda: len(bot.events()) == 2, timeout=20), bot.events()
    time.sleep(0.5)  # time for anything else to arrive, if it would
    assert [e["type"] for e in bot.events()] == ["message.created"] * 2
    # Every event is still recorded and readable.
    kinds = [e["type"] for e in pulled_events(stack, chatbot["id"])]
    assert kinds == [
        "conversation.created", "message.created", "conversation.status_changed",
        "conversation.created", "message.created",
    ]  # fmt: skip
    # Only the sent type has webhook deliveries at all.
    assert len(webhook_deliveries(stack)) == 2


def test_a_patch_changes_the_types_and_null_is_every_type(both):
    stack, bot = both
    chatbot, connection = _chatbot(stack, bot)
    assert chatbot["webhook_events"] is None
    path = f"/api/chatbots/{chatbot['id']}"
    # Repeats collapse; the answer lists the types in one order.
    patched = stack.api.patch(
        path, json={"webhook_events": ["conversation.status_changed", "conversation.created",
                                       "conversation.created"]},
    )  # fmt: skip
    assert patched.status_code == 200, patched.text
    assert patched.json()["webhook_events"] == [
        "conversation.created", "conversation.status_changed",
    ]  # fmt: skip
    conversation = stack.telegram_customer(connection, CHAT, "hello", 7101)
    stack.api.post(f"/api/conversations/{conversation['id']}/close")
    assert wait_for(lambda: len(bot.events()) == 2, timeout=20), bot.events()
    time.sleep(0.5)
    assert [e["type"] for e in bot.events()] == [
        "conversation.created", "conversation.status_changed",
    ]  # fmt: skip
    cleared = stack.api.patch(path, json={"webhook_events": None})
    assert cleared.status_code == 200 and cleared.json()["webhook_events"] is None
    stack.telegram_customer(connection, CHAT, "and now?", 7102)
    assert wait_for(lambda: len(bot.events()) == 4, timeout=20), bot.events()
    assert [e["type"] for e in bot.events()[2:]] == ["conversation.created", "message.created"]


def test_a_reply_failure_is_sent_only_when_asked_for(both):
    """delivery.failed (a reply the platform refused) is a type like the others."""
    stack, bot = both
    _chatbot_row, connection = _chatbot(stack, bot, webhook_events=["delivery.failed"])
    conversation = stack.telegram_customer(connection, CHAT, "hi", 7201)
    stack.telegram.fail_next(1, *TELEGRAM_BLOCKED)
    reply = stack.reply(conversation["id"], "sorry?")
    assert reply.status_code == 201, reply.text
    assert wait_for(lambda: len(bot.events()) == 1, timeout=20), bot.events()
    time.sleep(0.5)
    (failure,) = bot.events()
    assert failure["type"] == "delivery.failed"
    assert failure["data"]["delivery"]["message_id"] == reply.json()["id"]


def test_retrying_an_event_of_a_type_the_webhook_is_not_sent_is_a_409(both):
    stack, bot = both
    chatbot, connection = _chatbot(stack, bot, webhook_events=["message.created"])
    stack.telegram_customer(connection, CHAT, "hello", 7301)
    created = next(
        e for e in pulled_events(stack, chatbot["id"]) if e["type"] == "conversation.created"
    )
    answer = stack.api.post(f"/api/events/{created['id']}/retry")
    assert answer.status_code == 409, answer.text
    assert answer.json()["fields"] == ["webhook_events"]
    # Asked for from now on: the same retry makes its delivery and sends it.
    stack.api.patch(f"/api/chatbots/{chatbot['id']}", json={"webhook_events": None})
    assert stack.api.post(f"/api/events/{created['id']}/retry").status_code == 200
    assert wait_for(lambda: bot.of_event(created["id"]) != [], timeout=20)


@pytest.mark.parametrize(
    "value", [[], ["message.deleted"], "message.created", [1], {"message.created": True}]
)
def test_a_list_that_names_no_known_type_is_a_422(both, value):
    stack, _bot = both
    answer = stack.api.post("/api/chatbots", json={"name": "x", "webhook_events": value})
    assert answer.status_code == 422, answer.text
    assert "webhook_events" in answer.text
    assert stack.api.get("/api/chatbots").json()["items"] == []


def test_the_mask_names_each_type_once():
    """The stored form: one bit per type, and back."""
    assert sorted(events.TYPE_BITS.values()) == [1, 2, 4, 8]
    for n in range(1, 16):
        types = events.webhook_types(n)
        assert types is not None and events.webhook_mask(types) == n
        for t in EventType:
            assert events.webhook_gets(n, t) is (t in types)
    assert events.webhook_types(None) is None and events.webhook_mask(None) is None
