"""``POST /api/connections/{id}/retry-failed``: a connection's failed replies sent again.

After a platform outage that outlasted the retries, or once a revoked token is replaced,
an operator sends every failed reply of the connection again in one call. On SQLite and
PostgreSQL against the real app, a real dispatcher and the loopback Telegram: each failed
reply goes once however many calls race, in order per customer; an ``unknown`` one (the
customer may have it) is left alone; ``since`` leaves older failures; a connection that
could only fail again is a 409 naming why.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from tests.support.outbound import Stack, outbound_stack
from tests.support.platforms import Bot, wait_for

BOT_ID = 7001
FIRST, SECOND = 5550001, 5550002
REVOKED = "Telegram error 401: Unauthorized"


@pytest.fixture
def stack(database_url):
    with outbound_stack(database_url) as s:
        yield s


def _connection_with_two_customers(stack: Stack) -> tuple[dict, str, dict, dict]:
    bot = stack.chatbot()
    connection, token = stack.telegram_connection(bot["id"], BOT_ID)
    first = stack.telegram_customer(connection, FIRST, "hello", update_id=1)
    second = stack.telegram_customer(connection, SECOND, "hi", update_id=2)
    return connection, token, first, second


def _replies(stack: Stack, conversation: dict, *texts: str) -> list[dict]:
    out = []
    for text in texts:
        answer = stack.reply(conversation["id"], text)
        assert answer.status_code == 201, answer.text
        out.append(answer.json())
    return out


def _retry(stack: Stack, connection: dict, **body) -> dict:
    answer = stack.api.post(f"/api/connections/{connection['id']}/retry-failed", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _texts(chat_id: int, *bots: Bot) -> list[str]:
    """What reached the customer ``chat_id``, in order, through these tokens of the bot."""
    received = [m for bot in bots for m in bot.chats.get(str(chat_id), [])]
    return [m["text"] for m in sorted(received, key=lambda m: m["seq"])]


def test_after_a_revoked_token_is_replaced_every_failed_reply_goes_once(stack):
    connection, token, first, second = _connection_with_two_customers(stack)
    # One reply whose answer never came: unknown, and the customer has it.
    stack.telegram.fail_next(1, 200, {}, delay=1.5, deliver=True)
    (maybe,) = _replies(stack, second, "did this arrive?")
    stack.wait_delivery(second["id"], maybe["id"], "unknown")
    revoked = stack.telegram.bots[token]
    # (The platform records it once its late answer goes out.)
    assert wait_for(lambda: _texts(SECOND, revoked) == ["did this arrive?"], timeout=10)
    # The token is revoked: every reply fails for good.
    stack.telegram.bots.pop(token)
    failed = _replies(stack, first, "one", "two") + _replies(stack, second, "three")
    for reply in failed:
        shown = stack.wait_delivery(reply["conversation_id"], reply["id"], "failed")
        assert shown["delivery"]["last_error"].startswith(REVOKED), shown
    # Without a token it could only fail again: said, nothing queued.
    cleared = stack.api.patch(f"/api/connections/{connection['id']}", json={"access_token": None})
    assert cleared.status_code == 200, cleared.text
    refused = stack.api.post(f"/api/connections/{connection['id']}/retry-failed")
    assert refused.status_code == 409, refused.text
    assert refused.json()["fields"] == ["access_token"]
    # The new token, proven as at creation; then sixteen operators press retry at once.
    rotated = stack.telegram.add_bot(BOT_ID, token=f"{BOT_ID}:AAH-rotated")
    patched = stack.api.patch(
        f"/api/connections/{connection['id']}", json={"access_token": rotated.token}
    )
    assert patched.status_code == 200, patched.text
    barrier = threading.Barrier(16)

    def press(_: int) -> int:
        barrier.wait()
        return _retry(stack, connection)["requeued"]

    with ThreadPoolExecutor(16) as pool:
        counts = list(pool.map(press, range(16)))
    assert sum(counts) == 3 and sorted(counts)[-1] >= 1, counts
    for reply in failed:
        shown = stack.wait_delivery(reply["conversation_id"], reply["id"], "sent")
        assert shown["delivery"]["attempts"] == 1
    time.sleep(0.5)  # time for a second send, if there were one
    assert _texts(FIRST, revoked, rotated) == ["one", "two"]
    assert _texts(SECOND, revoked, rotated) == ["did this arrive?", "three"]
    shown = stack.message(second["id"], maybe["id"])
    assert shown["delivery"]["status"] == "unknown"
    assert _retry(stack, connection) == {"requeued": 0}


def test_since_leaves_the_failures_before_it(stack):
    connection, token, first, _second = _connection_with_two_customers(stack)
    revoked = stack.telegram.bots.pop(token)
    (old,) = _replies(stack, first, "before")
    stack.wait_delivery(first["id"], old["id"], "failed")
    cut = datetime.now(UTC)
    time.sleep(0.01)
    (new,) = _replies(stack, first, "after")
    stack.wait_delivery(first["id"], new["id"], "failed")
    stack.telegram.bots[token] = revoked  # the platform takes the token again
    assert _retry(stack, connection, since=cut.isoformat()) == {"requeued": 1}
    stack.wait_delivery(first["id"], new["id"], "sent")
    assert stack.message(first["id"], old["id"])["delivery"]["status"] == "failed"
    assert _texts(FIRST, revoked) == ["after"]


def test_refusals_name_why(stack):
    connection, _token, _first, _second = _connection_with_two_customers(stack)
    path = f"/api/connections/{connection['id']}/retry-failed"
    stranger = stack.server.client(stack.server.user())
    assert stranger.post(path).status_code == 404
    assert stack.server.client().post(path).status_code == 401
    assert stack.api.post("/api/connections/not-an-id/retry-failed").status_code == 404
    naive = stack.api.post(path, json={"since": "2026-01-01T10:00:00"})
    assert naive.status_code == 422 and "since" in naive.text
    unknown = stack.api.post(path, json={"until": "2026-01-01T10:00:00Z"})
    assert unknown.status_code == 422
    custom = stack.api.post(
        f"/api/chatbots/{connection['chatbot_id']}/connections",
        json={"channel": "custom", "external_id": "crm"},
    ).json()
    answer = stack.api.post(f"/api/connections/{custom['id']}/retry-failed")
    assert answer.status_code == 409 and answer.json()["fields"] == ["channel"]
    assert answer.headers["content-type"] == "application/problem+json"
