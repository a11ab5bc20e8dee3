"""How an event is written, on SQLite and PostgreSQL: with its webhook delivery when the
chatbot has a webhook (one statement where the database takes writes in a WITH clause, two
elsewhere), without one otherwise, and once per (type, subject) whatever repeats it."""

from __future__ import annotations

from uuid import UUID

import sqlalchemy as sa

from noclash.chat import events
from noclash.chat.inbound import receive_message
from noclash.db.tables import WEBHOOK_DESTINATION, chatbots, deliveries
from noclash.db.tables import events as event_rows
from tests.support.server import LiveServer


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
