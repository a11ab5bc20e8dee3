"""The outbox's order: per conversation *and destination*, on SQLite and PostgreSQL.

A customer's conversation has deliveries to two places: replies to the platform and
events to the chatbot's webhook. Each keeps its own order, and neither waits for the
other: a bot that answers 500 for hours must not hold up the replies to the customer, and
a platform outage must not hold up the bot's events. Claimed here with the real
:func:`noclash.chat.outbox.claim_due`; the end-to-end proofs are in
``tests/test_bot_webhooks.py``.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from noclash.chat.chatbots import create_chatbot
from noclash.chat.connections import create_connection
from noclash.chat.inbound import receive_message
from noclash.chat.messages import send_reply
from noclash.chat.outbox import claim_due
from noclash.chat.users import create_user
from noclash.db.tables import WEBHOOK_DESTINATION, chatbots, deliveries
from noclash.db.types import utcnow


def _bot_with_webhook(engine, name: str, **connection: str) -> tuple:
    """A user, their chatbot with a webhook, and one connection of it."""
    user, _token = create_user(engine, f"{name}@example.com")
    with engine.begin() as conn:
        bot = create_chatbot(conn, owner_id=user.id, name=name)
        conn.execute(
            sa.update(chatbots)
            .where(chatbots.c.id == bot.id)
            .values(webhook_url="https://bot.example/hook")
        )
        made = create_connection(conn, chatbot_id=bot.id, owner_id=user.id, **connection)
    return user, made


def _conversation_with_both(engine) -> tuple:
    """A Telegram customer who wrote twice, a reply to them, and a webhook on the chatbot:
    four webhook deliveries (conversation.created, three message.created) and one reply."""
    user, connection = _bot_with_webhook(
        engine, "order", channel="telegram", external_id="4242", secret="s",
        access_token="4242:token",
    )  # fmt: skip
    for n in (1, 2):
        result = receive_message(
            engine, connection_id=connection.id, psid="77", platform_message_id=f"in-{n}",
            text=f"hello {n}",
        )  # fmt: skip
    with engine.begin() as conn:
        send_reply(conn, result.conversation_id, owner_id=user.id, text="hi")
    return user, result.conversation_id


def test_each_destination_keeps_its_own_order_and_waits_for_nobody_else(engine):
    _user, conversation_id = _conversation_with_both(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.destination)
            .where(deliveries.c.conversation_id == conversation_id)
            .order_by(deliveries.c.id)
        ).all()
    webhook = [r.id for r in rows if r.destination == WEBHOOK_DESTINATION]
    platform = [r.id for r in rows if r.destination == "telegram"]
    assert len(webhook) == 4 and len(platform) == 1

    # The oldest of each destination: the webhook's others wait for its first, the reply
    # waits for none of the webhook's (before this rule, it waited for the three older).
    with engine.begin() as conn:
        first = claim_due(conn, limit=10, lease_seconds=30)
    assert {c.id for c in first} == {webhook[0], platform[0]}
    # While they are in flight (sending: still pending), nothing else of theirs is due.
    with engine.begin() as conn:
        assert claim_due(conn, limit=10, lease_seconds=30) == []
    # The webhook's first delivered: its second is next, alone.
    with engine.begin() as conn:
        conn.execute(
            sa.update(deliveries).where(deliveries.c.id == webhook[0]).values(status="sent")
        )
        second = claim_due(conn, limit=10, lease_seconds=30)
    assert [c.id for c in second] == [webhook[1]]


def test_claims_made_at_the_same_instant_each_get_their_own_events(engine):
    """Two dispatchers claiming at the same instant share a lease end: each claim must
    come back with its own events only (the read of the claimed events goes by the
    claim's token, and would hand the first claim's event to the second without it)."""
    _user, connection = _bot_with_webhook(
        engine, "twins", channel="custom", external_id="sms", secret="s"
    )
    for psid in ("ada", "bob"):  # two conversations: one due webhook delivery each
        receive_message(engine, connection_id=connection.id, psid=psid,
                        platform_message_id=f"m-{psid}", text="hello")  # fmt: skip
    now = utcnow() + timedelta(seconds=1)
    with engine.begin() as conn:
        first = claim_due(conn, limit=1, lease_seconds=30, now=now)
    with engine.begin() as conn:
        second = claim_due(conn, limit=10, lease_seconds=30, now=now)
    assert len(first) == 1 and len(second) == 1
    with engine.connect() as conn:
        event_of = dict(conn.execute(sa.select(deliveries.c.id, deliveries.c.event_id)).all())
    for claim in (*first, *second):
        assert claim.to_webhook and claim.event is not None
        assert claim.event["id"] == str(event_of[claim.id])
    assert first[0].event["id"] != second[0].event["id"]
