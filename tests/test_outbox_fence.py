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
from noclash.db.tables import DeliveryStatus, deliveries, events
from noclash.db.types import utcnow
from tests.support.factories import make_chatbot, make_user


def _queued_reply(engine, bot_id: str = "4242") -> None:
    owner = make_user(engine)
    bot = make_chatbot(engine, owner.id)
    with engine.begin() as conn:
        connection = create_connection(
            conn, chatbot_id=bot.id, owner_id=owner.id, channel="telegram",
            external_id=bot_id, secret="s", access_token=f"{bot_id}:token",
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


def test_one_batch_of_every_outcome_writes_only_what_its_claims_hold(engine):
    """A settlement batch mixing outcomes, and a stalled claim's outcomes beside the
    current ones for the same deliveries: on SQLite it is an ``executemany`` and failures
    one by one, on PostgreSQL one statement over arrays; both must write the same."""
    for n in range(5):
        _queued_reply(engine, bot_id=f"424{n}")
    now = utcnow()
    with engine.begin() as conn:
        stale = {c.id: c for c in claim_due(conn, limit=10, lease_seconds=5, now=now)}
    later = now + timedelta(seconds=6)
    with engine.begin() as conn:
        claims = sorted(claim_due(conn, limit=10, lease_seconds=5, now=later), key=lambda c: c.id)
    assert len(claims) == len(stale) == 5
    failed, sent, waiting, retried, untouched = claims

    def outcome(claim, status, **fields) -> Settlement:
        return Settlement(claim.id, claim.claim_token, status, later, **fields)

    echo_wait = later + timedelta(seconds=30)
    retry_at = later + timedelta(seconds=10)
    batch = [
        outcome(failed, DeliveryStatus.FAILED, last_error="403 blocked"),
        outcome(stale[failed.id], DeliveryStatus.FAILED, last_error="stalled claim"),
        outcome(sent, DeliveryStatus.SENT, platform_message_id="77", sent_at=later),
        Settlement(waiting.id, waiting.claim_token, DeliveryStatus.SENDING, echo_wait,
                   last_error="timed out; waiting for the echo"),
        Settlement(retried.id, retried.claim_token, DeliveryStatus.QUEUED, retry_at,
                   last_error="HTTP 502"),
        outcome(stale[untouched.id], DeliveryStatus.SENT, platform_message_id="x", sent_at=later),
    ]  # fmt: skip
    with engine.begin() as conn:
        assert settle(conn, batch, now=later) == 4
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(deliveries))}
        announced = conn.execute(
            sa.select(events.c.subject).where(events.c.type == "delivery.failed")
        ).scalars().all()
    state = {
        c.id: (rows[c.id].status, rows[c.id].claimed_by, rows[c.id].last_error)
        for c in claims
    }
    assert state == {
        failed.id: ("failed", None, "403 blocked"),
        sent.id: ("sent", None, None),
        waiting.id: ("sending", waiting.claim_token, "timed out; waiting for the echo"),
        retried.id: ("queued", None, "HTTP 502"),
        untouched.id: ("sending", untouched.claim_token, None),
    }
    assert rows[sent.id].platform_message_id == "77"
    assert rows[waiting.id].next_attempt_at == echo_wait
    assert rows[retried.id].next_attempt_at == retry_at
    # Announced once, by the claim that wrote the failure, not by the stalled one.
    assert announced == [f"{failed.id}:{failed.claim_token}"]
