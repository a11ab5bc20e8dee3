"""Replies reach the customer, once: the outbox, the dispatcher and the platforms' errors.

Every test runs on SQLite and PostgreSQL against the real app, a real dispatcher and the
loopback Meta and Telegram servers (tests/support/platforms.py), which answer in the
platforms' documented formats, errors included.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import pytest
import sqlalchemy as sa

from noclash.db.dialects import dialect_for
from noclash.db.tables import conversations, deliveries, messages
from tests.support.outbound import outbound_stack
from tests.support.platforms import (
    META_RATE_LIMITED,
    META_SERVER_ERROR,
    META_UNAVAILABLE,
    TELEGRAM_BAD_GATEWAY,
    TELEGRAM_BLOCKED,
    TELEGRAM_TOO_MANY,
    meta_error,
    telegram_error,
    wait_for,
)

PAGE = "104871234567890"
META_BAD_GATEWAY = (502, "<html><body>502 Bad Gateway</body></html>")


@pytest.fixture
def stack(database_url):
    with outbound_stack(database_url) as s:
        yield s


def _telegram_conversation(stack, chat_id: int = 5550001, bot_id: int = 7001):
    bot = stack.chatbot()
    connection, _token = stack.telegram_connection(bot["id"], bot_id)
    conversation = stack.telegram_customer(connection, chat_id, "hello", update_id=chat_id)
    return connection, conversation


def _meta_conversation(stack, psid: str = "6543210987654321"):
    bot = stack.chatbot()
    stack.meta_connection(bot["id"], PAGE)
    return stack.meta_customer(PAGE, psid, "hi there", mid=f"m_in_{psid}")


def _conversation_on(stack, platform: str):
    """A customer's conversation on ``platform`` and that platform's loopback server."""
    if platform == "meta":
        return _meta_conversation(stack), stack.meta
    _connection, conversation = _telegram_conversation(stack)
    return conversation, stack.telegram


def test_a_reply_is_stored_with_its_delivery_and_sent(stack):
    _connection, conversation = _telegram_conversation(stack)
    answer = stack.reply(conversation["id"], "Thanks, we are on it")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["delivery"]["status"] in ("queued", "sending", "sent")
    sent = stack.wait_delivery(conversation["id"], body["id"], "sent")
    assert sent["delivery"]["attempts"] == 1 and sent["delivery"]["last_error"] is None
    assert sent["delivery"]["sent_at"] is not None
    delivered = stack.telegram.delivered()
    assert [(m["chat_id"], m["text"]) for m in delivered] == [("5550001", "Thanks, we are on it")]
    assert sent["delivery"]["platform_message_id"] == str(delivered[0]["message_id"])


def test_a_retried_reply_is_one_message_and_one_send(stack):
    """32 concurrent copies of one request (same Idempotency-Key): one message, one send."""
    conversation = _meta_conversation(stack)
    barrier = threading.Barrier(32)

    def send(_: int) -> httpx.Response:
        barrier.wait()
        return stack.reply(conversation["id"], "your order shipped", key="reply-key-1")

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(send, range(32)))
    assert {a.status_code for a in answers} <= {201, 409}, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers if a.status_code == 201}
    assert len(ids) == 1, ids
    message_id = ids.pop()
    stack.wait_delivery(conversation["id"], message_id, "sent")
    time.sleep(0.5)  # time for a second send, if there were one
    assert [m["text"] for m in stack.meta.delivered()] == ["your order shipped"]
    with stack.server.engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(deliveries)
            .where(deliveries.c.message_id == UUID(message_id))
        ).scalar()
    assert count == 1


@pytest.mark.parametrize(
    "platform,error",
    [
        ("meta", META_SERVER_ERROR),
        ("meta", META_BAD_GATEWAY),
        ("meta", META_RATE_LIMITED),
        ("meta", (400, meta_error(4, "Application request limit reached"))),
        ("meta", (400, meta_error(80006, "There have been too many messages to this user"))),
        ("meta", (408, meta_error(2, "Request timed out"))),
        ("meta", (403, "<html>Forbidden by a proxy</html>")),
        ("telegram", TELEGRAM_TOO_MANY),
        ("telegram", TELEGRAM_BAD_GATEWAY),
        ("telegram", (408, telegram_error(408, "Request Timeout"))),
        ("telegram", (403, "<html>Forbidden by a proxy</html>")),
    ],
    ids=["meta-500", "meta-502", "meta-613", "meta-4", "meta-80006", "meta-408", "meta-proxy",
         "telegram-429", "telegram-502", "telegram-408", "telegram-proxy"],
)
def test_transient_errors_are_retried_and_sent_once(stack, platform, error):
    conversation, loopback = _conversation_on(stack, platform)
    loopback.fail_next(2, *error)
    message = stack.reply(conversation["id"], "after two failures").json()
    sent = stack.wait_delivery(conversation["id"], message["id"], "sent")
    assert sent["delivery"]["attempts"] == 3
    assert [m["text"] for m in loopback.delivered()] == ["after two failures"]
    assert len(loopback.sent) == 3


def test_telegram_retry_after_is_honoured(stack):
    """429 with parameters.retry_after = 1: the next attempt waits at least that long."""
    _connection, conversation = _telegram_conversation(stack)
    stack.telegram.fail_next(1, *TELEGRAM_TOO_MANY)
    message = stack.reply(conversation["id"], "patience").json()
    stack.wait_delivery(conversation["id"], message["id"], "sent")
    first, second = stack.telegram.sent
    assert second.at - first.at >= 0.95


@pytest.mark.parametrize(
    "platform,error,shown",
    [
        ("meta", META_UNAVAILABLE, "Meta error 551/1545041"),
        ("telegram", TELEGRAM_BLOCKED, "Telegram error 403: Forbidden: bot was blocked"),
    ],
    ids=["meta-551", "telegram-403"],
)
def test_permanent_errors_fail_with_the_error_and_retry_really_sends(stack, platform, error, shown):
    conversation, loopback = _conversation_on(stack, platform)
    loopback.fail_next(1, *error)
    message = stack.reply(conversation["id"], "can you hear me").json()
    failed = stack.wait_delivery(conversation["id"], message["id"], "failed")
    assert failed["delivery"]["attempts"] == 1
    assert shown in failed["delivery"]["last_error"]
    assert loopback.delivered() == []
    # Retry is a real send: queued, sent by the dispatcher, accepted by the platform.
    retried = stack.api.post(f"/api/messages/{message['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["delivery"]["status"] in ("queued", "sending", "sent")
    sent = stack.wait_delivery(conversation["id"], message["id"], "sent")
    assert sent["delivery"]["last_error"] is None
    assert [m["text"] for m in loopback.delivered()] == ["can you hear me"]
    # A sent message is not retried again: 409, and nothing is sent.
    again = stack.api.post(f"/api/messages/{message['id']}/retry")
    assert again.status_code == 409 and again.json()["current_status"] == "sent"
    assert len(loopback.delivered()) == 1


def test_retry_is_the_owners_and_needs_a_platform_delivery(stack):
    _connection, conversation = _telegram_conversation(stack)
    message = stack.reply(conversation["id"], "mine").json()
    stack.wait_delivery(conversation["id"], message["id"], "sent")
    stranger = stack.server.client(stack.server.user())
    assert stranger.post(f"/api/messages/{message['id']}/retry").status_code == 404
    assert stack.server.client().post(f"/api/messages/{message['id']}/retry").status_code == 401
    assert stack.api.post("/api/messages/not-a-uuid/retry").status_code == 404
    # An API-only conversation has no platform delivery.
    bot = stack.chatbot()
    plain = stack.api.post(f"/api/chatbots/{bot['id']}/conversations", json={}).json()
    local = stack.reply(plain["id"], "just stored").json()
    assert local["delivery"] is None
    assert stack.api.post(f"/api/messages/{local['id']}/retry").status_code == 404


def test_a_connection_without_access_token_fails_the_delivery_until_one_is_set(stack):
    bot = stack.chatbot()
    bot_user = stack.telegram.add_bot(7002)
    connection = stack.api.post(
        f"/api/chatbots/{bot['id']}/connections",
        json={"channel": "telegram", "external_id": "7002", "secret": "s3cret"},
    ).json()
    assert connection["has_access_token"] is False
    conversation = stack.telegram_customer(connection, 5550002, "hello", update_id=9)
    message = stack.reply(conversation["id"], "are you there").json()
    assert message["delivery"]["status"] == "failed"
    assert "no access_token" in message["delivery"]["last_error"]
    patched = stack.api.patch(
        f"/api/connections/{connection['id']}", json={"access_token": bot_user.token}
    )
    assert patched.status_code == 200 and patched.json()["has_access_token"] is True
    assert stack.api.post(f"/api/messages/{message['id']}/retry").status_code == 200
    stack.wait_delivery(conversation["id"], message["id"], "sent")
    assert [m["text"] for m in stack.telegram.delivered()] == ["are you there"]


def test_sends_to_one_customer_keep_their_order(stack):
    """The first reply fails twice; the later ones wait for it instead of overtaking it."""
    _connection, conversation = _telegram_conversation(stack)
    stack.telegram.fail_next(2, *TELEGRAM_BAD_GATEWAY)
    ids = [stack.reply(conversation["id"], f"part {i}").json()["id"] for i in range(5)]
    for message_id in ids:
        stack.wait_delivery(conversation["id"], message_id, "sent")
    assert [m["text"] for m in stack.telegram.delivered()] == [f"part {i}" for i in range(5)]


def test_a_retried_older_reply_goes_after_a_newer_one_in_flight_not_beside_it(stack):
    """Sends to one customer keep their order, also when an older failed reply is
    retried while a newer one is on its way: the older one is sent once the newer one
    has been answered, never at the same time (the customer could get them crossed)."""
    _connection, conversation = _telegram_conversation(stack)
    stack.telegram.fail_next(1, *TELEGRAM_BLOCKED)
    older = stack.reply(conversation["id"], "older").json()
    stack.wait_delivery(conversation["id"], older["id"], "failed")
    stack.telegram.latency = 0.6  # under the suite's 1 s timeout
    newer = stack.reply(conversation["id"], "newer").json()
    assert wait_for(lambda: len(stack.telegram.sent) == 2, timeout=10, every=0.01)
    retried = stack.api.post(f"/api/messages/{older['id']}/retry")
    assert retried.status_code == 200, retried.text
    stack.wait_delivery(conversation["id"], older["id"], "sent")
    stack.wait_delivery(conversation["id"], newer["id"], "sent")
    first_try, newer_sent, older_sent = stack.telegram.sent
    assert [r.body["text"] for r in (first_try, newer_sent, older_sent)] == [
        "older", "newer", "older"
    ]
    assert older_sent.at - newer_sent.at >= 0.55, "the older one was sent beside the newer one"


def test_an_echo_of_our_own_send_settles_it_and_stores_nothing(stack):
    conversation = _meta_conversation(stack)
    message = stack.reply(conversation["id"], "echo me").json()
    stack.wait_delivery(conversation["id"], message["id"], "sent")
    assert wait_for(lambda: len(stack.meta.echoes_sent) == 1)
    time.sleep(0.3)
    items = stack.api.get(f"/api/conversations/{conversation['id']}/messages").json()["items"]
    assert [(m["direction"], m["text"]) for m in items] == [("in", "hi there"), ("out", "echo me")]


def test_a_meta_send_whose_answer_is_lost_waits_for_the_echo_not_a_resend(stack):
    """The platform delivers, but its answer comes after noclash's read timeout: the
    echo (message.metadata = the delivery id) settles the delivery as sent, once."""
    conversation = _meta_conversation(stack)
    stack.meta.fail_next(1, 200, {"recipient_id": "x", "message_id": "late"}, delay=1.5,
                         deliver=True)  # fmt: skip
    message = stack.reply(conversation["id"], "slow platform").json()
    sent = stack.wait_delivery(conversation["id"], message["id"], "sent")
    assert sent["delivery"]["platform_message_id"].startswith("m_loopback")
    time.sleep(3.5)  # past the echo wait: nothing is sent again
    assert [m["text"] for m in stack.meta.delivered()] == ["slow platform"]
    assert len(stack.meta.sent) == 1


def test_a_meta_send_without_answer_or_echo_is_sent_again_after_the_wait(database_url):
    """No answer and no echo within the wait (the platform did not deliver): sent again."""
    with outbound_stack(database_url, meta_echo_wait_seconds=1.0) as stack:
        conversation = _meta_conversation(stack)
        stack.meta.fail_next(1, 200, {}, delay=1.5)  # not delivered, answer too late
        message = stack.reply(conversation["id"], "second chance").json()
        sent = stack.wait_delivery(conversation["id"], message["id"], "sent")
        assert sent["delivery"]["attempts"] == 2
        assert [m["text"] for m in stack.meta.delivered()] == ["second chance"]


def test_a_telegram_send_whose_answer_is_lost_is_unknown_until_retried(stack):
    """Telegram has no echo and no idempotency: noclash does not guess. The delivery is
    `unknown`; a retry sends it again (and the customer then has it twice)."""
    _connection, conversation = _telegram_conversation(stack)
    stack.telegram.fail_next(1, 200, {"ok": True, "result": {"message_id": 1}}, delay=1.5,
                             deliver=True)  # fmt: skip
    message = stack.reply(conversation["id"], "did it arrive").json()
    unknown = stack.wait_delivery(conversation["id"], message["id"], "unknown")
    assert "may have delivered" in unknown["delivery"]["last_error"]
    time.sleep(0.5)
    assert len(stack.telegram.sent) == 1
    assert stack.api.post(f"/api/messages/{message['id']}/retry").status_code == 200
    stack.wait_delivery(conversation["id"], message["id"], "sent")
    assert [m["text"] for m in stack.telegram.delivered()] == ["did it arrive"] * 2


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 504, "body": "<html>504 Gateway Time-out</html>"},
        {"status": 200, "body": "<html>not the Bot API</html>"},
        {"status": 200, "body": {"ok": True, "result": {"message_id": 1}}, "trickle": 0.4},
    ],
    ids=["gateway-timeout", "2xx-not-ok", "answer-longer-than-the-timeout"],
)
def test_a_telegram_answer_that_may_hide_a_delivery_is_unknown_not_sent_again(stack, answer):
    """A gateway that gave up waiting, a success that is not the Bot API's, and an answer
    whose bytes trickle in for longer than the timeout in all (no single read waits a
    timeout, so httpx alone would wait it out, past the claim's lease): the message may
    have reached the customer, so it is `unknown` until someone retries it."""
    _connection, conversation = _telegram_conversation(stack)
    stack.telegram.fail_next(1, answer["status"], answer["body"], deliver=True,
                             trickle=answer.get("trickle", 0.0))  # fmt: skip
    message = stack.reply(conversation["id"], "did it arrive").json()
    unknown = stack.wait_delivery(conversation["id"], message["id"], "unknown", "sent")
    assert unknown["delivery"]["status"] == "unknown", unknown
    time.sleep(0.5)
    assert len(stack.telegram.sent) == 1


def test_a_meta_gateway_timeout_waits_for_the_echo_not_a_resend(stack):
    """Meta's 504 with the message delivered: the echo settles it, nothing is sent twice."""
    conversation, loopback = _conversation_on(stack, "meta")
    loopback.fail_next(1, 504, "<html>504 Gateway Time-out</html>", deliver=True)
    message = stack.reply(conversation["id"], "through the gateway").json()
    sent = stack.wait_delivery(conversation["id"], message["id"], "sent")
    assert sent["delivery"]["attempts"] == 1
    assert [m["text"] for m in loopback.delivered()] == ["through the gateway"]
    assert len(loopback.sent) == 1


def test_an_echo_naming_a_delivery_to_another_customer_settles_nothing(stack):
    """Another app of the Page sends customer B a message whose metadata is the id of a
    failed reply to customer A (ids appear in delivery.failed events). Its echo is not
    ours: A's reply stays failed (not marked sent, never sent), and B's conversation gets
    the message as one sent from the Page outside noclash."""
    first = _meta_conversation(stack, psid="111")
    other = stack.meta_customer(PAGE, "222", "me too", mid="m_in_222")
    stack.meta.fail_next(1, *META_UNAVAILABLE)
    message = stack.reply(first["id"], "for A only").json()
    failed = stack.wait_delivery(first["id"], message["id"], "failed")
    with stack.server.engine.connect() as conn:
        delivery_id = conn.execute(
            sa.select(deliveries.c.id).where(deliveries.c.message_id == UUID(message["id"]))
        ).scalar_one()
    page = next(iter(stack.meta.pages.values()))
    stack.meta.other_app_send(page, "222", "from another app", str(delivery_id))
    assert wait_for(lambda: len(stack.meta.echoes_sent) == 1)
    assert wait_for(lambda: len(stack.api.get(
        f"/api/conversations/{other['id']}/messages").json()["items"]) == 2)  # fmt: skip
    assert stack.message(first["id"], message["id"])["delivery"] == failed["delivery"]
    items = stack.api.get(f"/api/conversations/{other['id']}/messages").json()["items"]
    assert [(m["direction"], m["text"]) for m in items] == [
        ("in", "me too"), ("out", "from another app")
    ]


def test_a_page_inbox_message_racing_a_close_starts_the_next_conversation(stack):
    """An agent closes the customer's conversation while a Page inbox echo is being
    stored: the echo waits for the conversation's lock, then finds it closed and starts
    the customer's next conversation, never adding to the closed one. (PostgreSQL: the
    close holds the row while the echo reads it; SQLite's one writer has no such gap.)"""
    if dialect_for(stack.server.engine).name != "postgresql":
        pytest.skip("SQLite's writers take turns: no read-then-lock gap")
    conversation = _meta_conversation(stack, psid="888")
    page = next(iter(stack.meta.pages.values()))
    closing = stack.server.engine.connect()
    transaction = closing.begin()
    closing.execute(
        sa.select(conversations.c.id)
        .where(conversations.c.id == UUID(conversation["id"]))
        .with_for_update()
    )
    stack.meta.page_inbox_send(page, "888", "typed while closing")
    time.sleep(0.8)  # the echo has read the open conversation and waits for its lock
    closing.execute(
        sa.update(conversations)
        .where(conversations.c.id == UUID(conversation["id"]))
        .values(status="CLOSED", closed_at=sa.func.now())
    )
    transaction.commit()
    closing.close()
    assert wait_for(lambda: len(stack.meta.echoes_sent) == 1)
    assert wait_for(lambda: len(stack.api.get("/api/conversations").json()["items"]) == 2)
    closed = stack.api.get(f"/api/conversations/{conversation['id']}/messages").json()["items"]
    assert [m["text"] for m in closed] == ["hi there"]
    items = stack.api.get("/api/conversations").json()["items"]
    (following,) = [c for c in items if c["id"] != conversation["id"]]
    texts = stack.api.get(f"/api/conversations/{following['id']}/messages").json()["items"]
    assert [m["text"] for m in texts] == ["typed while closing"]


def test_a_page_inbox_message_is_stored_once_as_outbound(stack):
    """A person answers from the Page inbox outside noclash: Meta echoes it (no metadata);
    it is stored once in the customer's active conversation, redeliveries included."""
    conversation = _meta_conversation(stack, psid="777")
    page = next(iter(stack.meta.pages.values()))
    stack.meta.page_inbox_send(page, "777", "answered from the Page inbox")
    assert wait_for(lambda: len(stack.meta.echoes_sent) == 1)
    echo = stack.meta.echoes_sent[0]
    import json

    from noclash.channels.meta import sign
    from tests.support.outbound import APP_SECRET

    raw = json.dumps(echo).encode()
    for _ in range(3):  # Meta redelivers
        again = stack.server.client().post(
            "/webhooks/meta", content=raw,
            headers={"Content-Type": "application/json",
                     "X-Hub-Signature-256": sign(raw, APP_SECRET)},
        )  # fmt: skip
        assert again.status_code == 200
    items = stack.api.get(f"/api/conversations/{conversation['id']}/messages").json()["items"]
    assert [(m["direction"], m["text"], m["delivery"]) for m in items] == [
        ("in", "hi there", None),
        ("out", "answered from the Page inbox", None),
    ]
    assert stack.meta.delivered() == []  # noclash sent nothing


def test_a_widget_visitor_reads_the_reply(stack):
    bot = stack.chatbot()
    public = stack.server.client()
    session = public.post(f"/api/widget/{bot['public_token']}/sessions").json()
    base = f"/api/widget/{bot['public_token']}/sessions/{session['session_id']}/messages"
    first = public.post(base, json={"text": "is anyone there?"}).json()
    reply = stack.reply(session["conversation_id"], "Yes! How can I help?").json()
    assert reply["delivery"] is None  # the widget reads it; no platform to send to
    page = public.get(base)
    assert page.status_code == 200
    assert [(m["direction"], m["text"]) for m in page.json()["items"]] == [
        ("in", "is anyone there?"),
        ("out", "Yes! How can I help?"),
    ]
    later = public.get(base, params={"after": first["message_id"]}).json()["items"]
    assert [m["text"] for m in later] == ["Yes! How can I help?"]
    # Another session of the same chatbot sees none of it; a wrong token is a 404.
    other = public.post(f"/api/widget/{bot['public_token']}/sessions").json()
    other_base = f"/api/widget/{bot['public_token']}/sessions/{other['session_id']}/messages"
    assert public.get(other_base).json()["items"] == []
    wrong = f"/api/widget/{stack.chatbot()['public_token']}/sessions/{session['session_id']}"
    assert public.get(f"{wrong}/messages").status_code == 404
    assert public.get(base, params={"after": "nope"}).status_code == 422


def test_a_due_snooze_wakes_within_seconds(stack):
    _connection, conversation = _telegram_conversation(stack)
    until = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    snoozed = stack.api.post(f"/api/conversations/{conversation['id']}/snooze",
                             json={"until": until})  # fmt: skip
    assert snoozed.json()["status"] == "SNOOZED"

    def woken() -> bool:
        row = stack.api.get(f"/api/conversations/{conversation['id']}").json()
        return row["status"] == "OPEN" and row["snoozed_until"] is None

    assert wait_for(woken, timeout=6)


def test_replies_outside_platforms_have_no_delivery(stack):
    bot = stack.chatbot()
    custom = stack.api.post(f"/api/chatbots/{bot['id']}/connections",
                            json={"channel": "custom", "external_id": "sms"}).json()  # fmt: skip
    inbound = stack.api.post(
        f"/api/connections/{custom['id']}/inbound",
        json={"psid": "+15550100", "message_id": "sms-1", "text": "hi"},
    )
    conversation_id = inbound.json()["conversation_id"]
    reply = stack.reply(conversation_id, "hello by SMS").json()
    assert reply["delivery"] is None
    with stack.server.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar() == 2
