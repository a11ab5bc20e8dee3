"""Review of the outbound path (issue 12) from outside: the HTTP API, a real dispatcher
and the loopback platforms, on SQLite and PostgreSQL.

What a support team and an SRE adopting noclash would hit:

- an echo of noclash's own reply that comes back without its ``metadata`` (Instagram may
  leave it out), after the send was answered or instead of a lost answer, must not show
  the reply twice in the transcript, nor make noclash send it again;
- ``POST /api/messages/{id}/retry`` of a reply that can only fail again (its connection
  was deleted, or its access token cleared) is a 409 naming why, not a 200 that queues a
  second failure;
- a reply queued when its connection is deleted fails saying so (on SQLite it said the
  connection had no access token, and to PATCH the deleted connection);
- and the edges the issue is silent on: retry in every state, 32 concurrent retries, a
  token rotated while a reply is queued, a conversation closed with a reply queued, the
  last attempt (error shown, ``delivery.failed``), an echo that overtakes the send's
  answer, and due snoozes with three dispatchers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import pytest
import sqlalchemy as sa

from noclash.chat.outbox import CONNECTION_GONE
from noclash.db.tables import deliveries, messages
from tests.support.outbound import Stack, dispatching, outbound_stack
from tests.support.platforms import (
    TELEGRAM_BAD_GATEWAY,
    TELEGRAM_BLOCKED,
    LoopbackMeta,
    wait_for,
)

PAGE = "104871234567890"
PSID = "6543210987654321"
CHAT = 5550001


@pytest.fixture
def stack(database_url: str) -> Iterator[Stack]:
    with outbound_stack(database_url) as s:
        yield s


def _meta_conversation(stack: Stack) -> dict:
    bot = stack.chatbot()
    stack.meta_connection(bot["id"], PAGE)
    return stack.meta_customer(PAGE, PSID, "hi there", mid=f"m_in_{PSID}")


def _telegram_conversation(stack: Stack) -> tuple[dict, dict]:
    bot = stack.chatbot()
    connection, _token = stack.telegram_connection(bot["id"])
    return connection, stack.telegram_customer(connection, CHAT, "hello", update_id=1)


def _echo_without_metadata(stack: Stack, mid: str, text: str) -> dict:
    """Meta's echo of a message the Page sent to the customer, with no ``metadata``
    (as Instagram may send it), posted signed to the real webhook; its answer."""
    ms = int(time.time() * 1000)
    message = {"is_echo": True, "mid": mid, "text": text, "app_id": int(LoopbackMeta.APP_ID)}
    body = {"object": "page", "entry": [{"id": PAGE, "time": ms, "messaging": [
        {"sender": {"id": PAGE}, "recipient": {"id": PSID}, "timestamp": ms,
         "message": message},
    ]}]}  # fmt: skip
    return stack.post_meta(json.dumps(body).encode())


def _transcript(stack: Stack, conversation_id: str) -> list[tuple[str, str]]:
    items = stack.api.get(
        f"/api/conversations/{conversation_id}/messages", params={"limit": 200}
    ).json()["items"]
    return [(m["direction"], m["text"]) for m in items]


def _failed_telegram_reply(stack: Stack, text: str = "can you hear me") -> tuple[dict, dict, dict]:
    """A Telegram reply refused for good (the bot was blocked): its connection,
    conversation and message, the delivery ``failed``."""
    connection, conversation = _telegram_conversation(stack)
    stack.telegram.fail_next(1, *TELEGRAM_BLOCKED)
    message = stack.reply(conversation["id"], text).json()
    stack.wait_delivery(conversation["id"], message["id"], "failed")
    return connection, conversation, message


# -- echoes without metadata -------------------------------------------------------------


def test_an_echo_without_metadata_of_a_sent_reply_stores_nothing(stack: Stack) -> None:
    """The send was answered and settled first; its echo then comes back without the
    delivery id in ``metadata``. Its ``mid`` is the reply's platform id: the reply is
    shown once, not once more as a message sent from the Page inbox."""
    conversation = _meta_conversation(stack)
    message = stack.reply(conversation["id"], "hello back").json()
    sent = stack.wait_delivery(conversation["id"], message["id"], "sent")
    mid = sent["delivery"]["platform_message_id"]
    for _ in range(2):  # Meta redelivers
        _echo_without_metadata(stack, mid, "hello back")
    assert _transcript(stack, conversation["id"]) == [("in", "hi there"), ("out", "hello back")]
    assert stack.message(conversation["id"], message["id"])["delivery"] == sent["delivery"]


def test_an_echo_without_metadata_of_a_lost_answer_settles_the_reply(stack: Stack) -> None:
    """Meta delivers but its answer is lost (a read timeout): the reply waits for its
    echo. The echo comes without ``metadata``: it is still this reply's, so it settles
    it as ``sent`` with the echo's ``mid``, stores nothing, and nothing is sent again
    when the echo wait ends (the customer would have had it twice)."""
    stack.meta.echo_url = None  # the loopback's own echoes carry metadata: post ours
    conversation = _meta_conversation(stack)
    stack.meta.fail_next(1, 200, {"recipient_id": PSID, "message_id": "late"}, delay=1.5,
                         deliver=True)  # fmt: skip
    message = stack.reply(conversation["id"], "slow platform").json()
    assert wait_for(lambda: len(stack.meta.delivered()) == 1, timeout=10)
    waiting = stack.message(conversation["id"], message["id"])["delivery"]
    assert waiting["status"] == "sending", waiting
    mid = stack.meta.delivered()[0]["mid"]
    _echo_without_metadata(stack, mid, "slow platform")
    sent = stack.wait_delivery(conversation["id"], message["id"], "sent", timeout=2)
    assert sent["delivery"]["platform_message_id"] == mid
    time.sleep(3.5)  # past the echo wait (3 s in these tests): nothing is sent again
    assert len(stack.meta.sent) == 1
    assert [m["text"] for m in stack.meta.delivered()] == ["slow platform"]
    assert _transcript(stack, conversation["id"]) == [("in", "hi there"), ("out", "slow platform")]


def test_a_page_inbox_message_is_still_stored_beside_a_sent_reply(stack: Stack) -> None:
    """What is not one of noclash's sends is still stored once: a person typing another
    text in the Page inbox, even right after a reply was sent."""
    conversation = _meta_conversation(stack)
    message = stack.reply(conversation["id"], "from noclash").json()
    stack.wait_delivery(conversation["id"], message["id"], "sent")
    _echo_without_metadata(stack, "m_inbox_typed", "typed in the Page inbox")
    _echo_without_metadata(stack, "m_inbox_again", "from noclash")  # sent: not in flight
    assert _transcript(stack, conversation["id"]) == [
        ("in", "hi there"),
        ("out", "from noclash"),
        ("out", "typed in the Page inbox"),
        ("out", "from noclash"),
    ]


# -- retry ---------------------------------------------------------------------------------


def test_retry_of_a_reply_that_could_only_fail_again_is_a_409(stack: Stack) -> None:
    """Its connection's token was cleared: 409 naming ``access_token``, the delivery stays
    as it was and nothing is sent; once a token is set, retry sends it. Its connection was
    deleted: 409 naming ``connection_id``."""
    connection, conversation, message = _failed_telegram_reply(stack)
    before = stack.message(conversation["id"], message["id"])["delivery"]
    cleared = stack.api.patch(f"/api/connections/{connection['id']}", json={"access_token": None})
    assert cleared.status_code == 200 and cleared.json()["has_access_token"] is False
    refused = stack.api.post(f"/api/messages/{message['id']}/retry")
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["fields"] == ["access_token"]
    time.sleep(0.3)
    assert stack.message(conversation["id"], message["id"])["delivery"] == before
    assert len(stack.telegram.sent) == 1
    token = next(iter(stack.telegram.bots))
    stack.api.patch(f"/api/connections/{connection['id']}", json={"access_token": token})
    assert stack.api.post(f"/api/messages/{message['id']}/retry").status_code == 200
    stack.wait_delivery(conversation["id"], message["id"], "sent")

    stack.telegram.fail_next(1, *TELEGRAM_BLOCKED)
    second = stack.reply(conversation["id"], "and this one").json()
    stack.wait_delivery(conversation["id"], second["id"], "failed")
    assert stack.api.delete(f"/api/connections/{connection['id']}").status_code == 204
    gone = stack.api.post(f"/api/messages/{second['id']}/retry")
    assert gone.status_code == 409, gone.text
    assert gone.json()["fields"] == ["connection_id"]
    assert [m["text"] for m in stack.telegram.delivered()] == ["can you hear me"]


def test_a_reply_queued_when_its_connection_is_deleted_fails_saying_so(
    database_url: str,
) -> None:
    """A reply queued, then its connection deleted before a dispatcher sends it: the
    delivery fails with "the connection was deleted", on both engines. (On SQLite the
    claim read ``connection_id IS NULL`` as false in RETURNING, and the reply failed as
    having no access token, telling the agent to PATCH a connection that is gone.)"""
    with outbound_stack(database_url, dispatcher=False) as stack:
        connection, conversation = _telegram_conversation(stack)
        message = stack.reply(conversation["id"], "too late").json()
        assert message["delivery"]["status"] == "queued"
        assert stack.api.delete(f"/api/connections/{connection['id']}").status_code == 204
        hub = stack.server.app.state.hub
        with dispatching(stack.server.engine, stack.server.settings, hub=hub):
            failed = stack.wait_delivery(conversation["id"], message["id"], "failed")
        assert failed["delivery"]["last_error"] == CONNECTION_GONE
        assert stack.telegram.sent == []


def test_retry_in_every_state(stack: Stack) -> None:
    """``queued`` and ``sending`` are 409s naming ``current_status`` and send nothing more;
    an inbound message, a widget reply and another tenant's message are 404s."""
    _connection, conversation = _telegram_conversation(stack)
    with stack.telegram.held():
        first = stack.reply(conversation["id"], "first").json()
        second = stack.reply(conversation["id"], "second").json()  # waits for the first
        assert wait_for(lambda: len(stack.telegram.sent) == 1, timeout=10)
        for message_id, status in ((first["id"], "sending"), (second["id"], "queued")):
            answer = stack.api.post(f"/api/messages/{message_id}/retry")
            assert answer.status_code == 409, answer.text
            assert answer.json()["current_status"] == status
    stack.wait_delivery(conversation["id"], second["id"], "sent")
    assert [m["text"] for m in stack.telegram.delivered()] == ["first", "second"]
    inbound = next(
        m for m in stack.api.get(f"/api/conversations/{conversation['id']}/messages").json()[
            "items"] if m["direction"] == "in"
    )  # fmt: skip
    assert stack.api.post(f"/api/messages/{inbound['id']}/retry").status_code == 404
    stranger = stack.server.client(stack.server.user())
    assert stranger.post(f"/api/messages/{first['id']}/retry").status_code == 404


def test_32_concurrent_retries_of_a_failed_reply_send_it_once(stack: Stack) -> None:
    _connection, conversation, message = _failed_telegram_reply(stack)
    barrier = threading.Barrier(32)

    def retry(_: int) -> httpx.Response:
        barrier.wait()
        return stack.api.post(f"/api/messages/{message['id']}/retry")

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(retry, range(32)))
    codes = [a.status_code for a in answers]
    assert codes.count(200) >= 1 and set(codes) <= {200, 409}, [a.text for a in answers]
    stack.wait_delivery(conversation["id"], message["id"], "sent")
    time.sleep(0.5)  # time for a second send, if there were one
    assert [m["text"] for m in stack.telegram.delivered()] == ["can you hear me"]


# -- credentials and lifecycle while replies are queued -------------------------------------


def test_a_token_rotated_while_a_reply_waits_is_the_one_it_is_sent_with(stack: Stack) -> None:
    connection, conversation = _telegram_conversation(stack)
    old_token = next(iter(stack.telegram.bots))
    # The first send is answered in 0.8 s (under the 1 s timeout); the second waits for it.
    ok = {"ok": True, "result": {"message_id": 900, "chat": {"id": CHAT}, "date": 0}}
    stack.telegram.fail_next(1, 200, ok, delay=0.8, deliver=True)
    first = stack.reply(conversation["id"], "first").json()
    second = stack.reply(conversation["id"], "second").json()
    assert wait_for(lambda: len(stack.telegram.sent) == 1, timeout=10)
    new = stack.telegram.add_bot(7001, token="7001:AAH-rotated-token")
    patched = stack.api.patch(
        f"/api/connections/{connection['id']}", json={"access_token": new.token}
    )
    assert patched.status_code == 200, patched.text
    assert stack.message(conversation["id"], second["id"])["delivery"]["status"] == "queued"
    stack.wait_delivery(conversation["id"], first["id"], "sent")
    stack.wait_delivery(conversation["id"], second["id"], "sent")
    paths = [r.path for r in stack.telegram.sent]
    assert paths == [f"/bot{old_token}/sendMessage", f"/bot{new.token}/sendMessage"]


def test_a_reply_queued_before_a_close_is_still_sent(stack: Stack) -> None:
    """Reply and close (the usual last move of an agent): the reply goes out."""
    _connection, conversation = _telegram_conversation(stack)
    with stack.telegram.held():
        message = stack.reply(conversation["id"], "bye, closing this").json()
        closed = stack.api.post(f"/api/conversations/{conversation['id']}/close")
        assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"
    stack.wait_delivery(conversation["id"], message["id"], "sent")
    assert [m["text"] for m in stack.telegram.delivered()] == ["bye, closing this"]


def test_every_reply_has_one_delivery_row(stack: Stack) -> None:
    """The echo paths store no message beside a reply: one outgoing message per reply."""
    conversation = _meta_conversation(stack)
    ids = [stack.reply(conversation["id"], f"part {i}").json()["id"] for i in range(3)]
    for message_id in ids:
        stack.wait_delivery(conversation["id"], message_id, "sent")
    assert wait_for(lambda: len(stack.meta.echoes_sent) == 3)
    with stack.server.engine.connect() as conn:
        out = conn.execute(
            sa.select(sa.func.count()).select_from(messages).where(messages.c.direction == "out")
        ).scalar()
        rows = conn.execute(
            sa.select(deliveries.c.message_id).where(deliveries.c.message_id.is_not(None))
        ).scalars()
        assert sorted(rows) == sorted(UUID(i) for i in ids)
    assert out == 3


def test_the_last_attempt_fails_the_reply_with_the_error_and_an_event(database_url: str) -> None:
    """``delivery_max_attempts`` reached on a retryable error: ``failed``, the platform's
    error in ``last_error``, and one ``delivery.failed`` event naming the delivery."""
    with outbound_stack(database_url, delivery_max_attempts=2) as stack:
        _connection, conversation = _telegram_conversation(stack)
        stack.telegram.fail_next(5, *TELEGRAM_BAD_GATEWAY)
        message = stack.reply(conversation["id"], "into the void").json()
        failed = stack.wait_delivery(conversation["id"], message["id"], "failed")
        delivery = failed["delivery"]
        assert delivery["attempts"] == 2
        assert delivery["last_error"].startswith("gave up after 2 attempts: ")
        assert "502" in delivery["last_error"]
        assert len(stack.telegram.sent) == 2 and stack.telegram.delivered() == []
        found = stack.api.get(
            "/api/events",
            params={"conversation_id": conversation["id"], "type": "delivery.failed"},
        )
        assert found.status_code == 200, found.text
        (event,) = found.json()["items"]
        assert event["data"]["delivery"]["message_id"] == message["id"]
        assert event["data"]["delivery"]["last_error"] == delivery["last_error"]


def test_an_echo_that_overtakes_the_send_s_answer_settles_it_once(stack: Stack) -> None:
    """Meta delivers, its echo reaches noclash while the Send API's answer is still on its
    way (trickling in, within the timeout): the echo settles the reply, the answer that
    follows changes nothing, and the transcript shows the reply once."""
    conversation = _meta_conversation(stack)
    answer = {"recipient_id": PSID, "message_id": "m_answer_after_echo"}
    stack.meta.fail_next(1, 200, answer, deliver=True, trickle=0.1)
    message = stack.reply(conversation["id"], "echo first").json()
    sent = stack.wait_delivery(conversation["id"], message["id"], "sent")
    assert sent["delivery"]["platform_message_id"].startswith("m_loopback")  # the echo's
    assert wait_for(lambda: len(stack.meta.echoes_sent) == 1)
    time.sleep(1.0)  # the answer has arrived and been dropped by the claim's fence
    again = stack.message(conversation["id"], message["id"])["delivery"]
    assert again["status"] == "sent" and again["attempts"] == 1
    assert again["platform_message_id"] == sent["delivery"]["platform_message_id"]
    assert len(stack.meta.sent) == 1
    assert _transcript(stack, conversation["id"]) == [("in", "hi there"), ("out", "echo first")]


def test_snoozes_wake_within_5_s_once_with_three_dispatchers(stack: Stack) -> None:
    """Three dispatchers on one database: every due snooze is reopened within 5 s of its
    ``snoozed_until``, each once (one ``conversation.status_changed`` from SNOOZED)."""
    bot = stack.chatbot()
    connection, _token = stack.telegram_connection(bot["id"])
    ids = [
        stack.telegram_customer(connection, CHAT + i, "hello", update_id=10 + i)["id"]
        for i in range(6)
    ]
    until = datetime.now(UTC) + timedelta(seconds=1.5)
    for conversation_id in ids:
        snoozed = stack.api.post(
            f"/api/conversations/{conversation_id}/snooze", json={"until": until.isoformat()}
        )
        assert snoozed.status_code == 200, snoozed.text
    hub = stack.server.app.state.hub
    engine, settings = stack.server.engine, stack.server.settings
    with dispatching(engine, settings, "second", hub), dispatching(engine, settings, "third", hub):

        def all_open() -> bool:
            items = stack.api.get("/api/conversations", params={"limit": 50}).json()["items"]
            return sum(c["status"] == "OPEN" for c in items if c["id"] in ids) == len(ids)

        assert wait_for(all_open, timeout=10, every=0.1)
        woken_at = datetime.now(UTC)
    assert (woken_at - until).total_seconds() < 5
    changes = stack.api.get(
        "/api/events", params={"type": "conversation.status_changed", "limit": 100}
    ).json()["items"]
    from_snooze = [e for e in changes if e["data"]["from"] == "SNOOZED"]
    assert sorted(e["conversation_id"] for e in from_snooze) == sorted(ids), changes
