"""A dispatcher whose lease ran out cannot settle a delivery another one has taken over.

The claim's id (``deliveries.claimed_by``) fences every outcome: on SQLite and
PostgreSQL, a delivery claimed, its lease expired, and claimed again is settled only by
the second claim, whatever the first one reports later (it stalled, say, and its send
came back after the take-over).
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from noclash.chat import outbox
from noclash.chat.connections import create_connection
from noclash.chat.inbound import receive_message
from noclash.chat.messages import send_reply
from noclash.chat.outbox import Settlement, claim_due, settle
from noclash.db.dialects import dialect_for
from noclash.db.tables import DeliveryStatus, deliveries, events
from noclash.db.types import utcnow
from noclash.unique import uuid7
from tests.support.factories import make_chatbot, make_user


def _queued_reply(engine, bot_id: str = "4242", webhook_url: str | None = None) -> None:
    owner = make_user(engine)
    bot = make_chatbot(engine, owner.id, webhook_url=webhook_url)
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


def test_the_one_statement_claim_returns_what_the_claim_and_its_read_return(engine):
    """Where the database takes an UPDATE in a common table expression (PostgreSQL) the
    claim reads its replies' texts and its events' envelopes in the same statement; it
    must hand the senders exactly what the claim and the read of its events do (the
    SQLite way), for a batch of both kinds, a reply whose connection was deleted too."""
    if not dialect_for(engine).supports_dml_in_cte:
        pytest.skip("the claim reads its events apart where an UPDATE cannot be a CTE")
    for n in range(3):
        _queued_reply(engine, bot_id=f"424{n}", webhook_url="https://bot.example.com/hook")
    with engine.begin() as conn:
        conn.execute(sa.update(deliveries).where(deliveries.c.id == _first_reply(conn)).values(
            connection_id=None))  # fmt: skip
    now = utcnow()

    def claimed(statement_per_kind: bool) -> list:
        with engine.connect() as conn, conn.begin() as tx:
            if statement_per_kind:  # the claim, then the read of its events
                rows = outbox._CLAIM.on(conn).execute(conn, params := _params(now))
                token = params["b_token"]
                replies = [outbox.Claimed(
                    id=r[0], claim_token=token, attempts=r[1], destination=r[2], recipient=r[3],
                    text=r[6], access_token=r[7], connection_gone=r[5] is None,
                ) for r in rows if r[4] is None]  # fmt: skip
                got = replies + outbox._events(conn, token, params)
            else:
                got = claim_due(conn, limit=100, lease_seconds=30, now=now)
            tx.rollback()
        return sorted((dataclasses.replace(c, claim_token=None) for c in got), key=lambda c: c.id)

    one, two = claimed(statement_per_kind=False), claimed(statement_per_kind=True)
    assert len(one) == 6 and sum(c.to_webhook for c in one) == 3
    assert sum(c.connection_gone for c in one) == 1
    assert all(c.event["data"] and c.webhook_url for c in one if c.to_webhook)
    assert one == two


def _first_reply(conn) -> object:
    return conn.execute(
        sa.select(deliveries.c.id).where(deliveries.c.message_id.is_not(None))
        .order_by(deliveries.c.id).limit(1)
    ).scalar_one()  # fmt: skip


def _params(now) -> dict:
    return {"b_now": now, "b_limit": 100, "b_lease_end": now + timedelta(seconds=30),
            "b_token": uuid7()}  # fmt: skip


def test_concurrent_claims_take_disjoint_deliveries_each_once(engine):
    """Sixteen claims at once (threads held at a barrier), each as a dispatcher runs it
    (on PostgreSQL one statement in autocommit, ``FOR UPDATE SKIP LOCKED``; on SQLite a
    transaction behind the write lock), over replies and webhook events: no delivery is
    claimed twice, and together they take every one that is due."""
    for n in range(20):
        _queued_reply(engine, bot_id=f"77{n:02d}", webhook_url="https://bot.example.com/hook")
    with engine.connect() as conn:
        pending = conn.execute(
            sa.select(sa.func.count()).select_from(deliveries)
            .where(deliveries.c.status == DeliveryStatus.QUEUED)
        ).scalar_one()  # fmt: skip
    # Per customer: the reply, and three events for the bot (conversation.created and the
    # two messages' message.created), of which only the oldest is due (events go in order).
    assert pending == 80
    autocommit = dialect_for(engine).supports_async_driver  # as the dispatcher claims
    barrier = threading.Barrier(16)

    def claim() -> list:
        barrier.wait()
        if autocommit:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                return claim_due(conn, limit=8, lease_seconds=30)
        with engine.begin() as conn:
            return claim_due(conn, limit=8, lease_seconds=30)

    with ThreadPoolExecutor(16) as pool:
        claims = [c for batch in pool.map(lambda _: claim(), range(16)) for c in batch]
    ids = [c.id for c in claims]
    assert len(ids) == len(set(ids)) == 40
    assert sum(c.to_webhook for c in claims) == 20
