"""How concurrent deliveries into one conversation lock it (see *Locks* in
:mod:`noclash.chat.inbound`), on SQLite and PostgreSQL.

What must hold whatever the interleaving: every message stored once, ``last_message_at``
at the newest message, a snoozed conversation woken by any message, and a redelivery
that writes nothing. On PostgreSQL, also: a delivery does not wait for another
delivery's touch of the conversation row.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from noclash.chat.inbound import receive_message
from noclash.db.tables import conversations, messages
from tests.support.factories import make_chatbot, make_connection

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WRITERS = 24


@pytest.fixture
def connection(engine):
    return make_connection(engine, make_chatbot(engine).id)


def _recv(bind, connection, mid, *, sent_at, psid="p1"):
    return receive_message(
        bind, connection_id=connection.id, psid=psid, platform_message_id=mid,
        text=f"text {mid}", sent_at=sent_at,
    )  # fmt: skip


def _conversation(engine, conversation_id):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(conversations).where(conversations.c.id == conversation_id)
        ).one()


def _stored_mids(engine, conversation_id):
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                sa.select(messages.c.platform_message_id).where(
                    messages.c.conversation_id == conversation_id
                )
            ).scalars()
        )


def _burst(engine, connection, mids_and_times):
    barrier = threading.Barrier(len(mids_and_times))

    def deliver(item):
        mid, sent_at = item
        barrier.wait()
        return _recv(engine, connection, mid, sent_at=sent_at)

    with ThreadPoolExecutor(len(mids_and_times)) as pool:
        return list(pool.map(deliver, mids_and_times))


def test_bursts_end_at_their_newest_message(engine, connection):
    """Writers held at a barrier, message times in random order: every message stored
    once and ``last_message_at`` exactly at the newest one, whichever touches were
    skipped and caught up. (Which ones are skipped varies from run to run; the test below
    holds the lock to skip one for certain.)"""
    first = _recv(engine, connection, "m0", sent_at=T0)
    rng = random.Random(7)
    stored = ["m0"]
    for burst_no in range(4):
        offsets = [burst_no * WRITERS + i for i in range(1, WRITERS + 1)]
        rng.shuffle(offsets)
        burst = [(f"m{i}", T0 + timedelta(seconds=i)) for i in offsets]
        # Every fourth one is a redelivery of another message of the burst, racing it.
        burst += burst[::4]
        results = _burst(engine, connection, burst)
        stored += [f"m{i}" for i in offsets]

        assert {r.conversation_id for r in results} == {first.conversation_id}
        assert sum(not r.duplicate for r in results) == WRITERS
        assert _stored_mids(engine, first.conversation_id) == sorted(stored)
        newest = T0 + timedelta(seconds=max(offsets))
        assert _conversation(engine, first.conversation_id).last_message_at == newest


def test_a_burst_wakes_a_snoozed_conversation(engine, connection):
    first = _recv(engine, connection, "m0", sent_at=T0)
    with engine.begin() as conn:
        conn.execute(
            sa.update(conversations)
            .where(conversations.c.id == first.conversation_id)
            .values(status="SNOOZED", snoozed_until=T0 + timedelta(days=1))
        )
    results = _burst(
        engine, connection, [(f"m{i}", T0 + timedelta(seconds=i)) for i in range(1, 13)]
    )

    assert {r.conversation_id for r in results} == {first.conversation_id}
    conv = _conversation(engine, first.conversation_id)
    assert (conv.status, conv.snoozed_until) == ("OPEN", None)
    assert conv.last_message_at == T0 + timedelta(seconds=12)


def test_a_redelivery_writes_nothing(engine, connection):
    """No row lock, no write: on PostgreSQL the transaction never gets an xid, so its
    commit flushes nothing; on SQLite no row changes."""
    first = _recv(engine, connection, "m1", sent_at=T0)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            probe = "SELECT pg_current_xact_id_if_assigned()"
        else:
            probe = "SELECT total_changes()"
        before = conn.exec_driver_sql(probe).scalar()
        again = _recv(conn, connection, "m1", sent_at=T0 + timedelta(seconds=1))
        after = conn.exec_driver_sql(probe).scalar()
    assert again.duplicate and again.message_id == first.message_id
    assert after == before
    if engine.dialect.name == "postgresql":
        assert after is None


def _postgresql_only(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: SQLite runs one writer at a time")


def _hold_touch_lock(engine, conversation_id):
    """Another transaction holding the row's touch lock, as a delivery touching it does."""
    holder = engine.connect()
    holder.begin()
    holder.execute(
        sa.select(conversations.c.id)
        .where(conversations.c.id == conversation_id)
        .with_for_update(key_share=True)
    )
    return holder


def _visible(engine, mid):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(messages.c.id).where(messages.c.platform_message_id == mid)
        ).first() is not None


def test_a_delivery_commits_while_another_holds_the_touch_lock(engine, connection):
    """The message is stored and committed without waiting; only the catch-up of
    ``last_message_at`` waits for the holder, and then moves it."""
    _postgresql_only(engine)
    first = _recv(engine, connection, "m1", sent_at=T0)
    holder = _hold_touch_lock(engine, first.conversation_id)
    try:
        with ThreadPoolExecutor(1) as pool:
            delivery = pool.submit(
                _recv, engine, connection, "m2", sent_at=T0 + timedelta(seconds=5)
            )
            deadline = time.monotonic() + 10
            while not _visible(engine, "m2"):
                assert time.monotonic() < deadline, "the delivery waited for the lock"
                time.sleep(0.02)
            assert not delivery.done()  # its catch-up waits for the holder
            holder.rollback()
            second = delivery.result(timeout=10)
    finally:
        holder.close()
    assert second.conversation_id == first.conversation_id and not second.duplicate
    assert _conversation(engine, first.conversation_id).last_message_at == T0 + timedelta(
        seconds=5
    )


def test_a_snoozed_conversation_is_woken_under_the_lock(engine, connection):
    """Waking cannot be caught up later: the delivery waits for the holder instead, and
    the conversation is OPEN when it returns."""
    _postgresql_only(engine)
    first = _recv(engine, connection, "m1", sent_at=T0)
    with engine.begin() as conn:
        conn.execute(
            sa.update(conversations)
            .where(conversations.c.id == first.conversation_id)
            .values(status="SNOOZED")
        )
    holder = _hold_touch_lock(engine, first.conversation_id)
    try:
        with ThreadPoolExecutor(1) as pool:
            delivery = pool.submit(
                _recv, engine, connection, "m2", sent_at=T0 + timedelta(seconds=5)
            )
            time.sleep(0.3)
            assert not _visible(engine, "m2")  # rolled back, now waiting for the lock
            holder.rollback()
            second = delivery.result(timeout=10)
    finally:
        holder.close()
    conv = _conversation(engine, second.conversation_id)
    assert second.conversation_id == first.conversation_id
    assert (conv.status, conv.last_message_at) == ("OPEN", T0 + timedelta(seconds=5))
