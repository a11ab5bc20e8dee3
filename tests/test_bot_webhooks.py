"""Events reach the chatbot's bot: signed, once per event, retried until acknowledged.

Every test runs on SQLite and PostgreSQL against the real app, a real dispatcher, the
loopback Telegram (customers write through the real ``/webhooks/telegram/{id}``) and a
loopback bot (:class:`tests.support.bots.LoopbackBot`) that records each request as it
arrived and answers as scripted: 500s, answers slower than noclash waits, 503 forever.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa

from noclash.channels import webhooks
from noclash.chat.outbox import WEBHOOK_REMOVED
from noclash.db.tables import deliveries
from tests.support.bots import (
    LoopbackBot,
    bot_stack,
    pulled_events,
    store_webhook_url,
    webhook_deliveries,
)
from tests.support.outbound import Stack, telegram_update
from tests.support.platforms import TELEGRAM_BAD_GATEWAY, wait_for
from tests.support.serve import NOCLASH

CHAT = 5550101
CHANGED = "conversation.status_changed"
# Retries a test can act between: the first one 2.5 to 5 s after a refusal.
SLOW_RETRIES = {"delivery_backoff_seconds": 5.0, "delivery_backoff_max_seconds": 10.0}


@pytest.fixture
def both(database_url):
    with bot_stack(database_url) as pair:
        yield pair


def _chatbot(stack: Stack, bot: LoopbackBot, *, secret: bool = True) -> tuple[dict, dict, str]:
    """A chatbot whose webhook is ``bot`` (with a secret, made first: nothing is sent
    unsigned), connected to Telegram; the chatbot, the connection and the secret."""
    chatbot = stack.chatbot()
    made = ""
    if secret:
        answer = stack.api.post(f"/api/chatbots/{chatbot['id']}/webhook-secret")
        assert answer.status_code == 200, answer.text
        made = answer.json()["webhook_secret"]
    changed = stack.api.patch(f"/api/chatbots/{chatbot['id']}", json={"webhook_url": bot.url})
    assert changed.status_code == 200, changed.text
    connection, _token = stack.telegram_connection(chatbot["id"])
    return changed.json(), connection, made


def _delivery_of(stack: Stack, event_id: str) -> Any:
    with stack.server.engine.connect() as conn:
        return conn.execute(
            sa.select(deliveries).where(deliveries.c.event_id == UUID(event_id))
        ).one()


def _wait_sent(stack: Stack, event_id: str, timeout: float = 20) -> Any:
    assert wait_for(lambda: _delivery_of(stack, event_id).status == "sent", timeout, 0.05), (
        _delivery_of(stack, event_id)
    )
    return _delivery_of(stack, event_id)


def _received(bot: LoopbackBot, text: str) -> bool:
    """Whether the bot has received the ``message.created`` of a message saying ``text``."""
    return any(e["data"]["message"]["text"] == text for e in bot.events("message.created"))


def _customer_says(stack: Stack, bot: LoopbackBot, connection: dict, update_id: int,
                   text: str) -> dict:  # fmt: skip
    """A customer's message in; the bot's first receipt of its ``message.created``."""
    stack.telegram_customer(connection, CHAT, text, update_id)

    def received() -> dict | None:
        found = [e for e in bot.events("message.created") if e["data"]["message"]["text"] == text]
        return found[0] if found else None

    assert wait_for(lambda: received() is not None, timeout=20), bot.events()
    event = received()
    assert event is not None
    return event


# -- what a bot receives ----------------------------------------------------------------------


def test_an_event_reaches_the_bot_signed_as_documented(both):
    stack, bot = both
    chatbot, connection, secret = _chatbot(stack, bot)
    assert chatbot["has_webhook_secret"] is True and secret not in json.dumps(chatbot)
    assert secret.startswith("whsec_") and len(secret) >= 40
    event = _customer_says(stack, bot, connection, 1001, "hello")
    _wait_sent(stack, event["id"])
    kinds = [e["type"] for e in bot.events()]
    assert kinds == ["conversation.created", "message.created"], kinds
    request = bot.of_event(event["id"])[0]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["noclash-event-id"] == event["id"]
    # The signature covers exactly the bytes received, which are the compact envelope.
    assert webhooks.verify(request.body, request.headers["noclash-signature"], secret)
    assert request.body == webhooks.encode(json.loads(request.body))
    timestamp = int(request.headers["noclash-signature"].split(",")[0].removeprefix("t="))
    assert abs(timestamp - request.at) < 5
    signature = request.headers["noclash-signature"].split(",", 1)[1]
    for t in ("9" * 400, f"+{timestamp}", f"{timestamp}.0"):  # refused, never raised
        assert not webhooks.verify(request.body, f"t={t},{signature}", secret)
    # The same envelope the pull API answers.
    pulled = {e["id"]: e for e in pulled_events(stack, chatbot["id"])}
    assert json.loads(request.body) == pulled[event["id"]]
    assert event["data"]["message"]["direction"] == "in"
    assert event["conversation_id"] == event["data"]["message"]["conversation_id"]
    delivery = _delivery_of(stack, event["id"])
    assert delivery.attempts == 1 and delivery.last_error is None


def test_without_a_secret_events_are_sent_unsigned(both):
    stack, bot = both
    chatbot, connection, _secret = _chatbot(stack, bot, secret=False)
    assert chatbot["has_webhook_secret"] is False
    event = _customer_says(stack, bot, connection, 1002, "unsigned")
    request = bot.of_event(event["id"])[0]
    assert "noclash-signature" not in request.headers
    _wait_sent(stack, event["id"])


@pytest.mark.parametrize("source", ["telegram", "widget", "agent"])
def test_an_event_reaches_the_bot_without_waiting_for_a_poll(database_url, source):
    """The commit that queues an event for a webhook wakes the dispatcher of its process,
    as a reply does: the bot hears at once, not at the next poll (30 s here; the
    dispatcher's own once-a-second snooze pass would otherwise be the wait). Each way an
    event is written: with its message's statement (a platform's webhook; the widget on
    PostgreSQL), after it (the widget on SQLite), on its own (an agent's close or reopen)."""
    with bot_stack(database_url, dispatcher_poll_seconds=30.0) as (stack, bot):
        chatbot, connection, _secret = _chatbot(stack, bot)
        public = f"/api/widget/{chatbot['public_token']}/sessions"
        session = stack.server.client().post(public).json()["session_id"]
        conversation = _customer_says(stack, bot, connection, 9099, "hello")["conversation_id"]
        waits = []
        for n in range(10):
            started = time.monotonic()
            if source == "telegram":
                _customer_says(stack, bot, connection, 9100 + n, f"quick {n}")
            elif source == "widget":
                said = stack.server.client().post(
                    f"{public}/{session}/messages", json={"text": f"quick {n}"}
                )
                assert said.status_code == 201, said.text
                assert wait_for(lambda n=n: _received(bot, f"quick {n}"), timeout=20)
            else:
                action = "reopen" if n % 2 else "close"
                moved = stack.api.post(f"/api/conversations/{conversation}/{action}")
                assert moved.status_code == 200, moved.text
                assert wait_for(lambda n=n: len(bot.events(CHANGED)) == n + 1, timeout=20)
            waits.append(time.monotonic() - started)
        assert _quick(waits), waits


@pytest.mark.parametrize("burst", ["new customer", "two replies"])
def test_a_delivery_held_back_by_an_earlier_one_goes_once_that_one_is_sent(database_url, burst):
    """Deliveries to one customer (or of one conversation's events to the bot) keep their
    order, so a later one is not claimed while an earlier one is pending. Once the
    earlier one is settled the dispatcher claims the later one at once, not at its next
    poll or snooze pass. The everyday case: a new customer's first message queues
    ``conversation.created`` and ``message.created`` together, and the bot must hear the
    message now; as must a customer sent two replies in a row."""
    with bot_stack(database_url, dispatcher_poll_seconds=30.0) as (stack, bot):
        _chatbot_out, connection, _secret = _chatbot(stack, bot)
        conversation = stack.telegram_customer(connection, CHAT, "hi", 9300)["id"]
        # Telegram answers as over the internet: the second reply is committed (and its
        # claim finds it held back) while the first is still on its way.
        stack.telegram.latency = 0.05
        waits = []
        for n in range(10):
            started = time.monotonic()
            if burst == "new customer":
                stack.telegram_customer(connection, CHAT + 1 + n, f"first {n}", 9301 + n)
                assert wait_for(lambda n=n: _received(bot, f"first {n}"), timeout=20)
            else:
                for part in "ab":
                    answer = stack.reply(conversation, f"reply {n}{part}")
                    assert answer.status_code == 201, answer.text
                sent = lambda n=n: f"reply {n}b" in [m["text"] for m in stack.telegram.delivered()]  # noqa: E731
                assert wait_for(sent, timeout=20)
            waits.append(time.monotonic() - started)
        assert _quick(waits), waits


def _quick(waits: list[float]) -> bool:
    """Woken: tens of ms each (50 to 150 measured, beside the rest of the suite). At the
    poll's mercy: about a second each, since work made right after the last arrived
    waits for the next snooze pass. The bound sits between, with room for a slow CI."""
    return sum(wait < 0.5 for wait in waits) >= 8


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "idempotency-key"])
def test_a_reply_reaches_the_customer_without_waiting_for_a_poll(database_url, keyed):
    """A reply's commit wakes the dispatcher, also a keyed one (the echo bot's), which
    the idempotency middleware commits after the route has returned. (A chatbot without a
    webhook: the reply's own delivery is what wakes it.)"""
    with bot_stack(database_url, dispatcher_poll_seconds=30.0) as (stack, _bot):
        connection, _token = stack.telegram_connection(stack.chatbot()["id"])
        conversation = stack.telegram_customer(connection, CHAT, "hi", 9200)["id"]
        waits = []
        for n in range(10):
            started = time.monotonic()
            answer = stack.reply(conversation, f"reply {n}", key=f"k-{n}" if keyed else None)
            assert answer.status_code == 201, answer.text
            sent = lambda n=n: f"reply {n}" in [m["text"] for m in stack.telegram.delivered()]  # noqa: E731
            assert wait_for(sent, timeout=20)
            waits.append(time.monotonic() - started)
        assert _quick(waits), waits


def test_a_worker_in_another_process_is_woken_through_notify(database_url, tmp_path):
    """serve without a dispatcher, and one noclash worker polling every 30 s: the commit's
    NOTIFY (marked: a delivery was queued) wakes the worker, so the bot hears of each
    customer message, and the customer gets each reply, at once."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no notifications: a worker in another process polls")
    with bot_stack(database_url, dispatcher=False) as (stack, bot):
        _row, connection, _secret = _chatbot(stack, bot)
        env = os.environ | {
            "NOCLASH_DATABASE_URL": database_url,
            "NOCLASH_TELEGRAM_API_URL": stack.telegram.api_url,
            "NOCLASH_DISPATCHER_POLL_SECONDS": "30",
            "NOCLASH_ALLOW_PRIVATE_WEBHOOKS": "1",
        }
        log = tmp_path / "worker.log"
        with log.open("w") as out:
            worker = subprocess.Popen([*NOCLASH, "worker"], env=env, stdout=out, stderr=out)
        try:
            # The first one may wait for the worker to start and listen.
            conversation = _customer_says(stack, bot, connection, 9300, "hello")
            hears, answers = [], []
            for n in range(10):
                started = time.monotonic()
                _customer_says(stack, bot, connection, 9301 + n, f"message {n}")
                hears.append(time.monotonic() - started)
            for n in range(10):
                started = time.monotonic()
                answer = stack.reply(conversation["conversation_id"], f"answer {n}")
                assert answer.status_code == 201, answer.text
                sent = lambda n=n: f"answer {n}" in [m["text"] for m in stack.telegram.delivered()]  # noqa: E731
                assert wait_for(sent, timeout=40)
                answers.append(time.monotonic() - started)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        assert _quick(hears), (hears, log.read_text()[-2000:])
        assert _quick(answers), (answers, log.read_text()[-2000:])


def test_64_concurrent_redeliveries_make_one_event_and_one_bot_call(both):
    """Telegram redelivers one update 64 times at once: one message, one event, one call
    to the bot (and one for the conversation it started)."""
    stack, bot = both
    chatbot, connection, _secret = _chatbot(stack, bot)
    webhook = stack.server.client()
    barrier = threading.Barrier(64)

    def redeliver(_: int) -> int:
        barrier.wait()
        return webhook.post(
            f"/webhooks/telegram/{connection['id']}",
            json=telegram_update(4242, "once, please", CHAT),
            headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
        ).status_code

    with ThreadPoolExecutor(64) as pool:
        assert set(pool.map(redeliver, range(64))) == {200}
    events = pulled_events(stack, chatbot["id"])
    assert [e["type"] for e in events] == ["conversation.created", "message.created"]
    for event in events:
        _wait_sent(stack, event["id"])
    time.sleep(0.5)  # time for a second call, if there were one
    assert [e["id"] for e in bot.events()] == [e["id"] for e in events]
    assert len(webhook_deliveries(stack)) == 2


# -- retries ----------------------------------------------------------------------------------


def test_a_bot_answering_500_three_times_gets_the_event_a_fourth_time(both):
    stack, bot = both
    _chatbot_row, connection, secret = _chatbot(stack, bot)
    first = _customer_says(stack, bot, connection, 2001, "first")
    _wait_sent(stack, first["id"])
    bot.fail_next(3, 500, {"error": "the bot's database is down"})
    event = _customer_says(stack, bot, connection, 2002, "again and again")
    delivery = _wait_sent(stack, event["id"])
    requests = bot.of_event(event["id"])
    assert len(requests) == 4 and delivery.attempts == 4
    assert {r.body for r in requests} == {requests[0].body}, "the same event every time"
    for request in requests:
        assert request.headers["noclash-event-id"] == event["id"]
        assert webhooks.verify(request.body, request.headers["noclash-signature"], secret)
    assert delivery.last_error is None


def test_a_bot_slower_than_the_timeout_gets_the_event_again(both):
    """The bot answers after noclash stopped waiting (NOCLASH_PLATFORM_TIMEOUT_SECONDS is
    1 s here): noclash cannot know it was handled, so it sends the event again, with the
    same id, for the bot to drop."""
    stack, bot = both
    _chatbot_row, connection, _secret = _chatbot(stack, bot)
    first = _customer_says(stack, bot, connection, 3001, "first")
    _wait_sent(stack, first["id"])
    bot.fail_next(1, 200, {"ok": True}, delay=1.5)
    event = _customer_says(stack, bot, connection, 3002, "slow bot")
    delivery = _wait_sent(stack, event["id"])
    assert len(bot.of_event(event["id"])) == 2 and delivery.attempts == 2


def test_after_the_last_attempt_the_event_fails_and_the_failure_is_not_sent_to_the_bot(
    database_url,
):
    with bot_stack(database_url, webhook_max_attempts=3) as (stack, bot):
        bot.answer = (503, {"error": "maintenance"})
        chatbot, connection, _secret = _chatbot(stack, bot)
        stack.telegram_customer(connection, CHAT, "anyone there?", 5001)
        assert wait_for(
            lambda: [d.status for d in webhook_deliveries(stack)] == ["failed", "failed"],
            timeout=20,
        ), webhook_deliveries(stack)
        for delivery in webhook_deliveries(stack):
            assert delivery.attempts == 3
            assert delivery.last_error == (
                'gave up after 3 attempts: the webhook answered 503: {"error":"maintenance"}'
            )
        failures = pulled_events(stack, chatbot["id"], "delivery.failed")
        assert len(failures) == 2
        assert {f["data"]["delivery"]["destination"] for f in failures} == {"webhook"}
        time.sleep(0.5)
        received = bot.events()
        assert len(received) == 6  # two events, three attempts each
        assert "delivery.failed" not in {e["type"] for e in received}


def test_events_reach_the_bot_in_order_per_conversation(both):
    """The first event is refused twice; the later ones wait for it instead of overtaking."""
    stack, bot = both
    chatbot, connection, _secret = _chatbot(stack, bot)
    bot.fail_next(2, 500, {})
    for n in range(5):
        stack.telegram_customer(connection, CHAT, f"part {n}", 6000 + n)
    stored = [e["id"] for e in pulled_events(stack, chatbot["id"])]
    assert len(stored) == 6
    assert wait_for(lambda: len({e["id"] for e in bot.events()}) == 6, timeout=20)
    first_receipts = list(dict.fromkeys(e["id"] for e in bot.events()))
    assert first_receipts == stored


# -- the secret and the URL change ------------------------------------------------------------


def test_a_retry_after_a_rotation_is_signed_with_the_new_secret(database_url):
    """Each attempt is signed with the secret the chatbot has when it is made: the first
    with the old one, the retry after the rotation with the new one (and not the old)."""
    retries = {"delivery_backoff_seconds": 1.0, "delivery_backoff_max_seconds": 1.0}
    with bot_stack(database_url, **retries) as (stack, bot):
        chatbot, connection, old = _chatbot(stack, bot)
        first = _customer_says(stack, bot, connection, 7001, "before")
        _wait_sent(stack, first["id"])
        bot.fail_next(1, 500, {})
        event = _customer_says(stack, bot, connection, 7002, "across a rotation")
        rotated = stack.api.post(f"/api/chatbots/{chatbot['id']}/webhook-secret")
        assert rotated.status_code == 200 and set(rotated.json()) == {"webhook_secret"}
        new = rotated.json()["webhook_secret"]
        assert new != old and new.startswith("whsec_")
        _wait_sent(stack, event["id"])
        before, after = bot.of_event(event["id"])
        assert webhooks.verify(before.body, before.headers["noclash-signature"], old)
        assert webhooks.verify(after.body, after.headers["noclash-signature"], new)
        assert not webhooks.verify(after.body, after.headers["noclash-signature"], old)
        shown = stack.api.get(f"/api/chatbots/{chatbot['id']}").json()
        assert shown["has_webhook_secret"] is True and new not in json.dumps(shown)
        # Someone else's chatbot: 404, and its secret stays.
        other = stack.server.client(stack.server.user())
        assert other.post(f"/api/chatbots/{chatbot['id']}/webhook-secret").status_code == 404
        last = _customer_says(stack, bot, connection, 7003, "after")
        request = bot.of_event(last["id"])[0]
        assert webhooks.verify(request.body, request.headers["noclash-signature"], new)


def test_removing_the_webhook_url_fails_the_events_on_their_way(database_url):
    with bot_stack(database_url, **SLOW_RETRIES) as (stack, bot):
        bot.answer = (500, {"error": "down"})
        chatbot, connection, _secret = _chatbot(stack, bot)
        stack.telegram_customer(connection, CHAT, "is this thing on", 8001)
        assert wait_for(lambda: len(bot.requests) == 1, timeout=10)
        removed = stack.api.patch(f"/api/chatbots/{chatbot['id']}", json={"webhook_url": None})
        assert removed.status_code == 200 and removed.json()["webhook_url"] is None
        pending = webhook_deliveries(stack)
        assert [(d.status, d.last_error) for d in pending] == [("failed", WEBHOOK_REMOVED)] * 2
        failures = pulled_events(stack, chatbot["id"], "delivery.failed")
        assert sorted(f["data"]["delivery"]["id"] for f in failures) == sorted(
            str(d.id) for d in pending
        )
        # Events from now on have no webhook to go to; the bot hears nothing more.
        stack.telegram_customer(connection, CHAT, "hello?", 8002)
        time.sleep(1.0)
        assert len(bot.requests) == 1
        assert len(webhook_deliveries(stack)) == 2


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:99999/hook", "webhook_url's port must be 1 to 65535"),
        ("http://xn--/hook", "webhook_url's host is not a valid host name"),
        ("ftp://example.com/hook", "webhook_url must be an http:// or https:// URL"),
    ],
)
def test_a_stored_url_no_sender_can_use_fails_its_events_at_once(database_url, caplog, url,
                                                                 reason):  # fmt: skip
    """A webhook_url written around the API's check (another tool, an older version):
    every retry would fail the same way, so the first attempt fails the delivery, saying
    why in the API's words; no traceback, no 25 attempts over hours."""
    with bot_stack(database_url) as (stack, bot):
        chatbot, connection, _secret = _chatbot(stack, bot)
        store_webhook_url(stack, chatbot["id"], url)
        stack.telegram_customer(connection, CHAT, "hello?", 8101)
        assert wait_for(
            lambda: [d.status for d in webhook_deliveries(stack)] == ["failed", "failed"],
            timeout=20,
        ), webhook_deliveries(stack)
        for delivery in webhook_deliveries(stack):
            assert (delivery.attempts, delivery.last_error) == (1, f"not sent: {reason}")
        failures = pulled_events(stack, chatbot["id"], "delivery.failed")
        assert len(failures) == 2
        assert bot.requests == []
    assert not [r for r in caplog.records if r.name == "noclash.dispatch" and r.exc_info]


# -- two destinations, one conversation -------------------------------------------------------


def test_a_bot_refusing_for_hours_never_holds_up_a_reply(database_url):
    with bot_stack(database_url, **SLOW_RETRIES) as (stack, bot):
        bot.answer = (500, {})
        _chatbot_row, connection, _secret = _chatbot(stack, bot)
        conversation = stack.telegram_customer(connection, CHAT, "help", 9001)
        assert wait_for(lambda: len(bot.requests) >= 1, timeout=10)
        reply = stack.reply(conversation["id"], "right away").json()
        stack.wait_delivery(conversation["id"], reply["id"], "sent", timeout=5)
        assert [m["text"] for m in stack.telegram.delivered()] == ["right away"]
        assert {d.status for d in webhook_deliveries(stack)} <= {"queued", "sending"}


def test_a_platform_outage_never_holds_up_the_bots_events(database_url):
    with bot_stack(database_url, **SLOW_RETRIES) as (stack, bot):
        _chatbot_row, connection, _secret = _chatbot(stack, bot)
        conversation = stack.telegram_customer(connection, CHAT, "help", 9101)
        stack.telegram.fail_next(50, *TELEGRAM_BAD_GATEWAY)
        reply = stack.reply(conversation["id"], "stuck at Telegram").json()
        assert wait_for(lambda: len(stack.telegram.sent) >= 1, timeout=10)
        later = _customer_says(stack, bot, connection, 9102, "still there?")
        _wait_sent(stack, later["id"])
        texts = [e["data"]["message"]["text"] for e in bot.events("message.created")]
        assert texts == ["help", "stuck at Telegram", "still there?"]
        status = stack.message(conversation["id"], reply["id"])["delivery"]["status"]
        assert status in ("queued", "sending")


def test_the_bot_can_answer_through_the_api(both):
    """What a bot does with an event: answer the customer with the event id as the
    Idempotency-Key, so answering a redelivered event twice is still one reply."""
    stack, bot = both
    _chatbot_row, connection, _secret = _chatbot(stack, bot)
    event = _customer_says(stack, bot, connection, 9201, "ping")
    path = f"/api/conversations/{event['conversation_id']}/messages"
    headers = {"Idempotency-Key": event["id"]}
    answers = [stack.api.post(path, json={"text": "pong"}, headers=headers) for _ in range(2)]
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[1].headers.get("idempotent-replayed") == "true"
    assert wait_for(lambda: len(stack.telegram.delivered()) == 1, timeout=10)
    time.sleep(0.3)
    assert [m["text"] for m in stack.telegram.delivered()] == ["pong"]
