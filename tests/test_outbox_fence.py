"""A dispatcher whose lease ran out cannot settle a delivery another one has taken over.

The claim's id (``deliveries.claimed_by``) fences every outcome: on SQLite and
PostgreSQL, a delivery claimed, its lease expired, and claimed again is settled only by
the second claim, whatever the first one reports later (it stalled, say, and its send
came back after the take-over).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from noclash.chat.connections import create_connection
from noclash.chat.inbound import receive_message
from noclash.chat.messages import send_reply
from noclash.chat.outbox import Settlement, claim_due, settle
from noclash.db.tables import DeliveryStatus, deliveries
from noclash.db.types import utcnow
from tests.support.factories import make_chatbot, make_user


def _queued_reply(engine) -> None:
    owner = make_user(engine)
    bot = make_chatbot(engine, owner.id)
    with engine.begin() as conn:
        connection = create_connection(
            conn, chatbot_id=bot.id, owner_id=owner.id, channel="telegram",
            external_id="4242", secret="s", access_token="4242:token",
        )  # fmt: skip
    inbound = receive_message(
        engine, connection_id=connection.id, psid="99", platform_message_id="1", text="hi"
    )
    with engine.begin() as conn:
        send_reply(conn, inbound.conversation_id, owner_id=owner.id, text="hello")


def test_an_expired_claim_cannot_settle_what_another_claim_took_over(engine):
    _queued_reply(engine)
    now = utcnow()
    with engine.begin() as conn:
        (first,) = claim_due(conn, limit=10, lease_seconds=5, now=now)
    with engine.begin() as conn:  # the lease still holds: nothing to take
        assert claim_due(conn, limit=10, lease_seconds=5, now=now + timedelta(seconds=1)) == []
    later = now + timedelta(seconds=6)
    with engine.begin() as conn:  # the lease ran out: another dispatcher takes it over
        (second,) = claim_due(conn, limit=10, lease_seconds=5, now=later)
    assert second.id == first.id and second.claim_token != first.claim_token
    assert second.attempts == 2

    def outcome(claim, status: DeliveryStatus, error: str | None = None) -> Settlement:
        return Settlement(claim.id, claim.claim_token, status, later, last_error=error)

    with engine.begin() as conn:  # the stalled first claim reports late: dropped
        assert settle(conn, [outcome(first, DeliveryStatus.FAILED, "late and wrong")]) == 0
        assert settle(conn, [outcome(first, DeliveryStatus.SENT)]) == 0
    with engine.connect() as conn:
        row = conn.execute(sa.select(deliveries)).one()
    assert (row.status, row.claimed_by, row.last_error) == ("sending", second.claim_token, None)
    with engine.begin() as conn:
        assert settle(conn, [outcome(second, DeliveryStatus.SENT)]) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(deliveries.c.status)).scalar() == "sent"
