"""Platform conformance found in review: Meta and Telegram as a team going live meets them.

Each test is a defect that was there, with the platform's documented behaviour it broke:

- a Meta body batching a customer's message, a Page inbox answer (an echo) and the
  customer's next message was stored customer messages first, echoes last, so the
  transcript showed the answer after the question it answered;
- Telegram service messages (the bot added to a group, a group upgraded to a supergroup,
  a pinned message) were stored as empty customer messages and opened conversations;
  content without a text (a contact, a poll) and Meta's ``is_unsupported`` were stored as
  an empty text;
- the Send API's ``1200 Temporary send message failure. Please try again later.`` was
  failed for good at the first attempt;
- a reply to a Telegram group that became a supergroup failed for good, though Telegram
  names the new chat (``parameters.migrate_to_chat_id``);
- a reply longer than the platform carries (Messenger 2000 characters, Instagram 1000
  bytes, Telegram 4096 UTF-16 code units) was stored and sent, to be refused on every
  attempt.

Every server test runs on SQLite and PostgreSQL, against the real app, a real dispatcher
and the loopback platforms (tests/support/platforms.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from uuid import UUID

import pytest
import sqlalchemy as sa

from noclash.channels import meta, telegram
from noclash.channels.sending import text_refusal
from noclash.chat import messages as chat_messages
from noclash.db.tables import Channel, chatbots, conversations, messages
from tests.channels import META_SECRET, META_VERIFY_TOKEN
from tests.support.outbound import Stack, outbound_stack
from tests.support.platforms import meta_error, telegram_error, wait_for
from tests.support.server import LiveServer, start_live_server

# What these tests check does not depend on the database engine (parsing, addresses,
# HTTP, the pages' rules): they run on SQLite alone, to keep the suite within its time.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PAGE = "104871234567890"
PSID = "6543210987654321"
BOT_SECRET = "s3cret"


@pytest.fixture
def server(database_url: str) -> Iterator[LiveServer]:
    with start_live_server(
        database_url, meta_app_secret=META_SECRET, meta_verify_token=META_VERIFY_TOKEN
    ) as live:
        yield live


@pytest.fixture
def stack(database_url: str) -> Iterator[Stack]:
    with outbound_stack(database_url) as s:
        yield s


def _connection(server: LiveServer, channel: str, external_id: str, **extra: str) -> str:
    client = server.client(server.user())
    bot = client.post("/api/chatbots", json={"name": "b"}).json()["id"]
    answer = client.post(
        f"/api/chatbots/{bot}/connections",
        json={"channel": channel, "external_id": external_id, **extra},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _post_meta(server: LiveServer, body: dict) -> dict:
    raw = json.dumps(body).encode()
    answer = server.client().post(
        "/webhooks/meta",
        content=raw,
        headers={"Content-Type": "application/json",
                 "X-Hub-Signature-256": meta.sign(raw, META_SECRET)},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()


def _post_telegram(server: LiveServer, connection_id: str, update: dict) -> dict:
    answer = server.client().post(
        f"/webhooks/telegram/{connection_id}",
        json=update,
        headers={telegram.SECRET_HEADER: BOT_SECRET},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _transcript(server: LiveServer, connection_id: str) -> list[tuple[str, str, str]]:
    """Every message of the connection as the API lists them (by id, the order stored):
    ``(psid, direction, text)``."""
    query = (
        sa.select(conversations.c.psid, messages.c.direction, messages.c.text)
        .join(conversations, conversations.c.id == messages.c.conversation_id)
        .where(messages.c.connection_id == sa.bindparam("c", type_=messages.c.connection_id.type))
        .order_by(messages.c.id)
    )
    with server.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query, {"c": UUID(connection_id)})]


def _conversation_count(server: LiveServer) -> int:
    with server.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(conversations)).scalar_one()


# -- Meta: a batched body is stored in its order ------------------------------------------


def _customer(mid: str, text: str, ms: int) -> dict:
    return {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": ms,
            "message": {"mid": mid, "text": text}}  # fmt: skip


def _page_inbox_echo(mid: str, text: str, ms: int) -> dict:
    return {"sender": {"id": PAGE}, "recipient": {"id": PSID}, "timestamp": ms,
            "message": {"is_echo": True, "mid": mid, "text": text}}  # fmt: skip


@SQLITE_ONLY
def test_a_batched_meta_body_is_stored_in_its_order_once(server):
    """Meta batches events into one POST (``entry[].messaging[]``, several entries): a
    customer's question, the answer a person wrote in the Page inbox (its echo), the
    customer's thanks, an unsupported message. They were stored customer messages first,
    echoes last: the listing (by id) showed the answer after the thanks."""
    connection_id = _connection(server, "messenger", PAGE)
    ms = 1764064800000
    body = {
        "object": "page",
        "entry": [
            {"id": PAGE, "time": ms + 2000, "messaging": [
                _customer("m_1", "Where is my order?", ms),
                _page_inbox_echo("m_2", "It ships today.", ms + 1000),
            ]},
            {"id": PAGE, "time": ms + 4000, "messaging": [
                _customer("m_3", "Thanks!", ms + 2000),
                {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": ms + 3000,
                 "message": {"mid": "m_4", "is_unsupported": True}},
            ]},
        ],
    }  # fmt: skip
    first = _post_meta(server, body)
    assert first == {"stored": 4, "duplicates": 0, "ignored": 0, "unrouted": 0,
                     "settled": 0, "invalid": 0}  # fmt: skip
    expected = [
        (PSID, "in", "Where is my order?"),
        (PSID, "out", "It ships today."),
        (PSID, "in", "Thanks!"),
        (PSID, "in", meta.UNSUPPORTED_TEXT),
    ]
    assert _transcript(server, connection_id) == expected
    again = _post_meta(server, body)  # Meta redelivers the batch
    assert again["stored"] == 0 and again["duplicates"] == 4
    assert _transcript(server, connection_id) == expected


# -- Telegram: service messages are nobody's message ---------------------------------------


def _update(update_id: int, chat_id: int, **content: object) -> dict:
    chat = {"id": chat_id, "type": "group" if chat_id < 0 else "private", "title": "Shop"}
    return {
        "update_id": update_id,
        "message": {"message_id": update_id, "date": 1764064800, "chat": chat,
                    "from": {"id": 4242, "is_bot": False, "first_name": "Ada"}, **content},
    }  # fmt: skip


BOT_USER = {"id": 6001, "is_bot": True, "first_name": "Shop", "username": "shop_bot"}
SERVICE_MESSAGES = [
    {"new_chat_members": [BOT_USER], "new_chat_member": BOT_USER,
     "new_chat_participant": BOT_USER},
    {"group_chat_created": True},
    {"migrate_to_chat_id": -1001234567890},
    {"pinned_message": {"message_id": 1, "date": 1764064800,
                        "chat": {"id": -4001, "type": "group"}, "text": "Opening hours"}},
    {"left_chat_member": {"id": 4243, "is_bot": False, "first_name": "Bob"}},
    {"new_chat_title": "Shop support"},
]  # fmt: skip


@SQLITE_ONLY
def test_telegram_service_messages_store_nothing_and_open_no_conversation(server):
    """Adding the bot to a group sends a ``message`` with ``new_chat_members`` and no
    text: it was stored as an empty customer message, in a new conversation titled by
    whoever added the bot. So was every service message (a group upgraded to a
    supergroup, a pin, a member leaving). A customer's real message in the group (a
    negative chat id) is stored; a contact has a note, not an empty text."""
    connection_id = _connection(server, "telegram", "6001", secret=BOT_SECRET)
    for i, content in enumerate(SERVICE_MESSAGES):
        receipt = _post_telegram(server, connection_id, _update(100 + i, -4001, **content))
        assert receipt == {"stored": 0, "duplicates": 0, "ignored": 1, "invalid": 0}, content
    assert _conversation_count(server) == 0
    assert (
        _post_telegram(server, connection_id, _update(200, -4001, text="Hello shop"))["stored"] == 1
    )
    contact = {"contact": {"phone_number": "+15550100", "first_name": "Ada"}}
    assert _post_telegram(server, connection_id, _update(201, 4242, **contact))["stored"] == 1
    assert _post_telegram(server, connection_id, _update(201, 4242, **contact))["duplicates"] == 1
    assert _transcript(server, connection_id) == [
        ("-4001", "in", "Hello shop"),
        ("4242", "in", "[attachment: contact]"),
    ]


def test_telegram_content_without_text_is_noted_not_empty():
    """Pure parser: each content kind gets a note, and a GIF (``animation`` with its
    ``document``) is an animation; a kind newer than the parser is still stored."""
    for content, text in [
        ({"poll": {"id": "1", "question": "?"}}, "[attachment: poll]"),
        ({"animation": {}, "document": {}}, "[attachment: animation]"),
        ({"video_note": {}}, "[attachment: video_note]"),
        ({"dice": {"emoji": "🎲", "value": 3}}, "[attachment: dice]"),
        ({"something_new": {}}, telegram.UNSUPPORTED_TEXT),
    ]:
        event = telegram.parse(_update(1, 42, **content))
        assert event is not None and event.text == text, content
    for content in SERVICE_MESSAGES:
        assert telegram.parse(_update(1, -4001, **content)) is None, content


# -- outbound: what the platforms answer ---------------------------------------------------


def _meta_conversation(stack: Stack) -> dict:
    bot = stack.chatbot()
    stack.meta_connection(bot["id"], PAGE)
    return stack.meta_customer(PAGE, PSID, "hi there", mid="m_in_1")


def _telegram_conversation(stack: Stack, chat_id: int) -> dict:
    bot = stack.chatbot()
    connection, _token = stack.telegram_connection(bot["id"], 7001)
    return stack.telegram_customer(connection, chat_id, "hello", update_id=900001)


@SQLITE_ONLY
def test_meta_temporary_send_failure_1200_is_retried_and_sent_once(stack):
    """Meta documents ``1200 Temporary send message failure. Please try again later.``
    (HTTP 400, no ``is_transient``); it was failed for good at the first attempt."""
    conversation = _meta_conversation(stack)
    stack.meta.fail_next(
        1, 400, meta_error(1200, "Temporary send message failure. Please try again later.")
    )
    message = stack.reply(conversation["id"], "your order shipped").json()
    sent = stack.wait_delivery(conversation["id"], message["id"], "sent", "failed")
    assert sent["delivery"]["status"] == "sent", sent["delivery"]
    assert sent["delivery"]["attempts"] == 2
    assert [m["text"] for m in stack.meta.delivered()] == ["your order shipped"]


@SQLITE_ONLY
def test_a_reply_to_a_group_upgraded_to_a_supergroup_reaches_the_supergroup(stack):
    """Telegram refuses a send to a group that became a supergroup with 400 and
    ``parameters.migrate_to_chat_id``, the new chat: the reply was failed for good. It is
    sent to the new chat in the same attempt, once."""
    conversation = _telegram_conversation(stack, -4001)
    upgraded = telegram_error(400, "Bad Request: group chat was upgraded to a supergroup chat")
    upgraded["parameters"] = {"migrate_to_chat_id": -1001234567890}
    stack.telegram.fail_next(1, 400, upgraded)
    message = stack.reply(conversation["id"], "We open at nine").json()
    sent = stack.wait_delivery(conversation["id"], message["id"], "sent", "failed")
    assert sent["delivery"]["status"] == "sent", sent["delivery"]
    assert sent["delivery"]["attempts"] == 1
    assert [(m["chat_id"], m["text"]) for m in stack.telegram.delivered()] == [
        ("-1001234567890", "We open at nine")
    ]
    assert [r.body["chat_id"] for r in stack.telegram.sent] == ["-4001", -1001234567890]


@pytest.mark.parametrize("platform", ["messenger", "telegram"])
def test_a_reply_longer_than_the_platform_carries_is_refused_and_never_sent(stack, platform):
    """Messenger carries 2000 characters, Telegram 4096 UTF-16 code units (2049 emoji
    outside the BMP are 4098): such a reply was stored and sent, to be refused every time.
    The API refuses it with a 422 naming ``text`` and stores nothing; one stored another
    way (by an application calling noclash.chat, or before this rule) fails at its first
    attempt, nothing sent, saying the limit and what to do; one within the limit is sent."""
    if platform == "messenger":
        conversation, loopback = _meta_conversation(stack), stack.meta
        too_long, longest = "x" * 2001, "y" * 2000
    else:
        conversation, loopback = _telegram_conversation(stack, 4242), stack.telegram
        too_long, longest = "\U0001f600" * 2049, "\U0001f600" * 2048
    limit = "2000" if platform == "messenger" else "4096"
    before = stack.api.get(f"/api/conversations/{conversation['id']}/messages").json()
    refused = stack.reply(conversation["id"], too_long)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert f"longer than the {limit}" in problem["detail"], problem
    assert [f["field"] for f in problem["fields"]] == ["text"], problem
    after = stack.api.get(f"/api/conversations/{conversation['id']}/messages").json()
    assert after == before  # nothing stored

    with stack.server.engine.begin() as conn:
        owner = conn.execute(
            sa.select(chatbots.c.owner_id)
            .join(conversations, conversations.c.chatbot_id == chatbots.c.id)
            .where(conversations.c.id == UUID(conversation["id"]))
        ).scalar_one()
        stored = chat_messages.send_reply(conn, conversation["id"], owner_id=owner, text=too_long)
    failed = stack.wait_delivery(conversation["id"], str(stored.id), "failed", "sent")
    delivery = failed["delivery"]
    assert delivery["status"] == "failed" and delivery["attempts"] == 1, delivery
    assert f"longer than the {limit}" in delivery["last_error"]
    assert "several replies" in delivery["last_error"]
    time.sleep(0.2)
    assert loopback.sent == []
    ok = stack.reply(conversation["id"], longest).json()
    stack.wait_delivery(conversation["id"], ok["id"], "sent")
    assert wait_for(lambda: [m["text"] for m in loopback.delivered()] == [longest])


def test_text_limits_count_as_each_platform_counts():
    """Instagram counts bytes of UTF-8 (1000), Telegram UTF-16 code units (4096),
    Messenger characters (2000); a widget or custom channel has no limit here."""
    assert text_refusal(Channel.INSTAGRAM, "日" * 333) is None  # 999 bytes
    assert "1002 bytes" in (text_refusal(Channel.INSTAGRAM, "日" * 334) or "")
    assert text_refusal(Channel.TELEGRAM, "\U0001f600" * 2048) is None
    assert text_refusal(Channel.TELEGRAM, "é" * 4096) is None
    assert text_refusal(Channel.TELEGRAM, "é" * 4097) is not None
    assert text_refusal(Channel.MESSENGER, "日" * 2000) is None
    assert text_refusal(Channel.WIDGET, "x" * 100_000) is None


# -- Meta: a large batch is taken whole ------------------------------------------------------


@SQLITE_ONLY
def test_a_meta_batch_larger_than_the_api_body_limit_is_stored(server):
    """Meta batches many updates in one POST and escapes every non-ASCII character as
    ``\\uXXXX`` (six bytes a letter): 150 Cyrillic messages are over the API's 64 KiB body
    limit. That was a 413, which Meta answers by sending the same body again, forever,
    so every message in it was lost. Webhooks take up to NOCLASH_MAX_WEBHOOK_BODY_BYTES
    (1 MiB); beyond that, still a 413; other routes keep their 64 KiB."""
    connection = _connection(server, "messenger", PAGE)
    text = "Здравствуйте, где мой заказ? " * 3
    items = [_customer(f"m_big_{i}", f"{text}{i}", 1_700_000_000_000 + i) for i in range(150)]
    body = {"object": "page", "entry": [{"id": PAGE, "time": 1, "messaging": items}]}
    raw = json.dumps(body).encode()  # json.dumps escapes non-ASCII, as Meta does
    assert server.settings.max_body_bytes < len(raw) < server.settings.max_webhook_body_bytes

    def post(payload: bytes):
        return server.client().post(
            "/webhooks/meta",
            content=payload,
            headers={"Content-Type": "application/json",
                     "X-Hub-Signature-256": meta.sign(payload, META_SECRET)},
        )  # fmt: skip

    answer = post(raw)
    assert answer.status_code == 200, answer.text
    stored = _transcript(server, connection)
    assert [t for _psid, _direction, t in stored] == [f"{text}{i}" for i in range(150)]

    huge = b" " * server.settings.max_webhook_body_bytes + raw
    refused = post(huge)
    assert refused.status_code == 413
    assert str(server.settings.max_webhook_body_bytes) in refused.json()["detail"]
    # An API route keeps the smaller limit.
    other = server.client(server.user()).post(
        "/api/chatbots", content=raw, headers={"Content-Type": "application/json"}
    )
    assert other.status_code == 413


# -- Meta: a tapped button is what the customer said ------------------------------------------


@SQLITE_ONLY
def test_a_postback_is_stored_as_the_customers_message_once(server):
    """Get Started, a persistent menu item, an ice breaker: Meta sends a ``postback``
    (``title``, ``payload``, ``mid``) instead of a message. It was dropped, so the
    customer's first question never reached the inbox or the bot. Its title is stored as
    the customer's message, deduplicated by its mid; a postback without them is ignored."""
    connection = _connection(server, "messenger", PAGE)
    tapped = {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1_700_000_000_000,
              "postback": {"mid": "m_postback_1", "title": "Where is my order?",
                           "payload": "ORDER_STATUS"}}  # fmt: skip
    old_style = {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1,
                 "postback": {"payload": "USER_DEFINED_PAYLOAD"}}  # fmt: skip
    body = {"object": "page", "entry": [{"id": PAGE, "time": 1, "messaging": [tapped, old_style]}]}
    first = _post_meta(server, body)
    again = _post_meta(server, body)  # Meta redelivers
    assert first != again
    assert _transcript(server, connection) == [(PSID, "in", "Where is my order?")]
    assert _conversation_count(server) == 1


def test_a_telegram_update_numbered_like_an_old_one_is_still_stored(server):
    """Telegram picks the next update_id at random after a week without updates: a new
    message can come with the number of one stored long ago. Deduplicated by update_id,
    it was dropped as that old message's duplicate. The key is the chat and the message's
    id: a real redelivery (the same update again) is still a duplicate."""
    connection = _connection(server, "telegram", "7001", secret=BOT_SECRET)

    def update(update_id: int, chat_id: int, message_id: int, text: str) -> dict:
        person = {"id": chat_id, "first_name": "A"}
        return {"update_id": update_id,
                "message": {"message_id": message_id, "date": 1_700_000_000, "text": text,
                            "chat": {**person, "type": "private"},
                            "from": {**person, "is_bot": False}}}  # fmt: skip

    assert _post_telegram(server, connection, update(500, 42, 7, "first week"))["stored"] == 1
    again = _post_telegram(server, connection, update(500, 42, 7, "first week"))
    assert again["duplicates"] == 1  # a redelivery
    later = _post_telegram(server, connection, update(500, 42, 912, "a week later"))
    assert later["stored"] == 1, later
    other_chat = _post_telegram(server, connection, update(501, 43, 7, "another customer"))
    assert other_chat["stored"] == 1, other_chat
    assert sorted(t for _p, _d, t in _transcript(server, connection)) == [
        "a week later",
        "another customer",
        "first week",
    ]


@SQLITE_ONLY
def test_a_telegram_secret_setwebhook_would_refuse_is_refused(server):
    """Telegram's setWebhook takes a secret_token of 1 to 256 letters, digits, _ and -:
    a connection stored with "my secret!" could never be registered, so it would never
    receive an update. Creating one with such a secret is a 422 naming secret (the
    request's schema says so), changing one's secret to it a 409."""
    client = server.client(server.user())
    bot = client.post("/api/chatbots", json={"name": "b"}).json()["id"]
    for bad in ("my secret!", "x" * 257, "s3cret/../", "ключ"):
        refused = client.post(
            f"/api/chatbots/{bot}/connections",
            json={"channel": "telegram", "external_id": "7001", "secret": bad},
        )
        assert refused.status_code == 422, (bad, refused.text)
        assert [f["field"] for f in refused.json()["fields"]] == ["secret"]
    made = client.post(
        f"/api/chatbots/{bot}/connections",
        json={"channel": "telegram", "external_id": "7001", "secret": "A-z_09" * 40},
    )
    assert made.status_code == 201, made.text
    # A PATCH body does not say the channel, so its schema cannot refuse the secret: the
    # connection's channel conflicts with it (409), as the same secret suits a custom one.
    patched = client.patch(f"/api/connections/{made.json()['id']}", json={"secret": "no way"})
    assert patched.status_code == 409 and patched.json()["fields"] == ["secret"], patched.text
