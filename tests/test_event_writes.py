"""How an event is written, on SQLite and PostgreSQL: with its webhook delivery when the
chatbot has a webhook (one statement where the database takes writes in a WITH clause, two
elsewhere), without one otherwise, and once per (type, subject) whatever repeats it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from noclash.chat import events
from noclash.chat.inbound import receive_message
from noclash.chat.slugs import rename_conversation
from noclash.db.tables import WEBHOOK_DESTINATION, chatbots, conversations, deliveries, messages
from noclash.db.tables import events as event_rows
from tests.support.server import LiveServer

T0 = datetime(2026, 12, 6, 9, 30, 15, 250000, tzinfo=UTC)


def _bot(live: LiveServer) -> tuple[dict, dict]:
    client = live.client(live.user())
    bot = client.post("/api/chatbots", json={"name": "writes"}).json()
    connection = client.post(
        f"/api/chatbots/{bot['id']}/connections", json={"channel": "custom", "external_id": "sms"}
    ).json()
    return bot, connection


def test_an_event_brings_its_webhook_delivery_only_with_a_webhook(live_server):
    engine = live_server.engine
    with_hook, hooked = _bot(live_server)
    _without, plain = _bot(live_server)
    with engine.begin() as conn:
        conn.execute(
            sa.update(chatbots)
            .where(chatbots.c.id == sa.bindparam("b_id"))
            .values(webhook_url="http://127.0.0.1:9/hook"),
            {"b_id": UUID(with_hook["id"])},
        )
    for connection in (hooked, plain):
        for _ in range(2):  # a redelivery records nothing more
            receive_message(
                engine, connection_id=UUID(connection["id"]),
                psid="ada", platform_message_id="m-1", text="hi",
            )  # fmt: skip
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(event_rows.c.id, event_rows.c.chatbot_id, event_rows.c.type)
        ).all()
        queued = conn.execute(
            sa.select(deliveries.c.event_id, deliveries.c.destination, deliveries.c.status)
        ).all()
    assert sorted(r.type for r in rows) == sorted(["conversation.created", "message.created"] * 2)
    hooked_events = {r.id for r in rows if str(r.chatbot_id) == with_hook["id"]}
    assert {d.event_id for d in queued} == hooked_events
    assert {(d.destination, d.status) for d in queued} == {(WEBHOOK_DESTINATION, "queued")}
    # The same (type, subject) again: no event, no delivery.
    row = next(r for r in rows if r.type == "message.created" and r.id in hooked_events)
    with engine.begin() as conn:
        subject = conn.execute(
            sa.select(event_rows.c.subject).where(event_rows.c.id == row.id)
        ).scalar_one()
        again = events.record(
            conn, events.EventType.MESSAGE_CREATED, subject,
            chatbot_id=row.chatbot_id, conversation_id=None, data={},
        )  # fmt: skip
        assert again is False
        assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar() == 2


def test_an_inbound_message_announces_the_document_of_its_row(live_server):
    """Every inbound message, the first of a conversation and the ones after it, whose
    ``message.created`` PostgreSQL writes inside the delivery's own statement: the event
    carries the stored row's columns as the other events do (``events.as_data``), and the
    webhook delivery comes with it only for a chatbot with a webhook."""
    engine = live_server.engine
    with_hook, hooked = _bot(live_server)
    _without, plain = _bot(live_server)
    with engine.begin() as conn:
        conn.execute(
            sa.update(chatbots).where(chatbots.c.id == UUID(with_hook["id"]))
            .values(webhook_url="http://127.0.0.1:9/hook")
        )  # fmt: skip
    stored = []
    for connection in (hooked, plain):
        for n, sent_at in enumerate((None, T0, None)):
            stored.append(receive_message(
                engine, connection_id=UUID(connection["id"]), psid="grace",
                platform_message_id=f"m-{n}", text=f"line {n} ü \\ \"quoted\"", sent_at=sent_at,
                username="Grace",
            ).message_id)  # fmt: skip
    with engine.connect() as conn:
        announced = {
            UUID(r.subject): r
            for r in conn.execute(
                sa.select(event_rows).where(event_rows.c.type == "message.created")
            )
        }
        rows = conn.execute(sa.select(messages).where(messages.c.id.in_(stored))).all()
        hooked_events = set(
            conn.execute(
                sa.select(deliveries.c.event_id).where(
                    deliveries.c.destination == WEBHOOK_DESTINATION
                )
            ).scalars()
        )
    assert len(rows) == len(stored) == 6 and set(announced) == set(stored)
    for row in rows:
        event = announced[row.id]
        assert event.payload == {"message": events.as_data(row, events.MESSAGE_FIELDS)}
        assert event.conversation_id == row.conversation_id
        assert (event.id in hooked_events) == (str(event.chatbot_id) == with_hook["id"])
    _conversations_announce_their_rows(engine, hooked_events, with_hook["id"])


def _conversations_announce_their_rows(
    engine: Any, hooked_events: set, hooked_bot: str, only: set | None = None
) -> None:
    """Each conversation.created (of the conversations ``only``, default all) carries its
    row, the slug it kept included, and comes before its first message's event."""
    with engine.connect() as conn:
        started = conn.execute(
            sa.select(event_rows).where(event_rows.c.type == "conversation.created")
        ).all()
        first: dict = {}
        for r in conn.execute(
            sa.select(event_rows.c.conversation_id, event_rows.c.id)
            .where(event_rows.c.type == "message.created")
            .order_by(event_rows.c.id.desc())
        ):
            first[r.conversation_id] = r.id
        rows = {r.id: r for r in conn.execute(sa.select(conversations))}
    assert started and len(started) == len(rows)
    for event in started:
        if only is not None and event.conversation_id not in only:
            continue
        row = rows[event.conversation_id]
        assert event.payload == {"conversation": events.as_data(row, events.CONVERSATION_FIELDS)}
        assert event.id < first[row.id]
        assert (event.id in hooked_events) == (str(event.chatbot_id) == hooked_bot)


def test_a_conversation_whose_slug_was_taken_announces_the_slug_it_keeps(live_server):
    """A new conversation whose slug is another conversation's former slug moves on to
    another slug after its statement: its conversation.created carries the one it kept."""
    engine = live_server.engine
    bot, connection = _bot(live_server)
    with engine.connect() as conn:
        owner = conn.execute(
            sa.select(chatbots.c.owner_id).where(chatbots.c.id == UUID(bot["id"]))
        ).scalar_one()

    def deliver(psid: str, mid: str) -> Any:
        return receive_message(
            engine, connection_id=UUID(connection["id"]), psid=psid,
            platform_message_id=mid, text="hi", username="Grace",
        )  # fmt: skip

    first = deliver("grace", "m-1")
    with engine.begin() as conn:
        rename_conversation(conn, first.conversation_id, owner_id=owner, title="Ada")
    second = deliver("grace-again", "m-2")
    with engine.connect() as conn:
        slug = conn.execute(
            sa.select(conversations.c.slug).where(conversations.c.id == second.conversation_id)
        ).scalar_one()
    assert slug != "grace"  # "grace" is the first conversation's former slug
    _conversations_announce_their_rows(engine, set(), "no webhook", {second.conversation_id})
