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
from noclash.db.tables import chatbots, conversations, messages
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


def test_bursts_with_an_agent_at_work_settle_without_errors(engine, connection):
    """Bursts of deliveries (a quarter in the caller's own transaction, as the widget
    does, some redelivered) while an agent snoozes, replies, reopens and closes the
    customer's conversation. No delivery fails (a deadlock would: the first version of the
    snooze wake-up had them), at most one conversation is active, no message is stored
    twice, and every conversation's ``last_message_at`` is its newest message's time."""
    from noclash.chat import lifecycle
    from noclash.chat.conversations import find_active
    from noclash.chat.errors import Conflict
    from noclash.chat.messages import send_reply

    with engine.connect() as conn:
        owner_id = conn.execute(
            sa.select(chatbots.c.owner_id).where(chatbots.c.id == connection.chatbot_id)
        ).scalar_one()
    _recv(engine, connection, "m0", sent_at=T0)
    failures: list[BaseException] = []

    def agent(stop: threading.Event, seed: int) -> None:
        rng = random.Random(seed)
        actions = [
            lambda c, cid: lifecycle.snooze(c, cid, owner_id=owner_id),
            lambda c, cid: send_reply(c, cid, owner_id=owner_id, text="on it"),
            lambda c, cid: lifecycle.reopen(c, cid, owner_id=owner_id),
            lambda c, cid: lifecycle.close(c, cid, owner_id=owner_id),
        ]
        while not stop.is_set():
            try:
                with engine.begin() as conn:
                    active = find_active(conn, connection.id, "p1")
                    if active is not None:
                        rng.choices(actions, weights=[4, 4, 1, 1])[0](conn, active.id)
            except Conflict:
                pass  # a reopen beside another active conversation: a 409, as it should
            except Exception as exc:  # any other failure fails the test
                failures.append(exc)

    def deliver(burst_no: int, i: int) -> None:
        mid = f"b{burst_no}-m{i % 18}"  # 24 deliveries, 18 messages: some redelivered
        at = T0 + timedelta(seconds=burst_no * WRITERS + i % 18)
        if i % 4 == 0:
            with engine.begin() as conn:
                _recv(conn, connection, mid, sent_at=at)
        else:
            _recv(engine, connection, mid, sent_at=at)

    for burst_no in range(6):
        stop = threading.Event()
        worker = threading.Thread(target=agent, args=(stop, burst_no))
        worker.start()
        barrier = threading.Barrier(WRITERS)

        def one(
            i: int, burst_no: int = burst_no, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            deliver(burst_no, i)

        try:
            with ThreadPoolExecutor(WRITERS) as pool:
                list(pool.map(one, range(WRITERS)))
        finally:
            stop.set()
            worker.join()
    assert failures == []

    with engine.connect() as conn:
        active = conn.execute(
            sa.select(sa.func.count()).where(
                conversations.c.connection_id == connection.id,
                conversations.c.status.in_(["OPEN", "SNOOZED"]),
            )
        ).scalar_one()
        twice = conn.execute(
            sa.select(messages.c.platform_message_id)
            .where(messages.c.platform_message_id.is_not(None))
            .group_by(messages.c.platform_message_id)
            .having(sa.func.count() > 1)
        ).all()
        newest = (
            sa.select(sa.func.max(sa.func.coalesce(messages.c.sent_at, messages.c.created_at)))
            .where(messages.c.conversation_id == conversations.c.id)
            .scalar_subquery()
        )
        rows = conn.execute(
            sa.select(conversations.c.last_message_at, newest.label("newest")).where(
                conversations.c.connection_id == connection.id
            )
        ).all()
    assert active <= 1
    assert twice == []
    assert all(r.last_message_at == r.newest for r in rows), rows


def _lock_waits(engine) -> int:
    """How many backends of this database wait for a lock right now."""
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).scalar_one()


def _until(predicate, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _insert_uncommitted(engine, connection, conversation_id, mid):
    """Another transaction storing message ``mid`` and not committing yet (a concurrent
    delivery of the same message): whoever inserts ``mid`` now waits for it."""
    from noclash.unique import uuid7

    racer = engine.connect()
    racer.begin()
    racer.execute(
        sa.insert(messages).values(
            id=uuid7(), conversation_id=conversation_id, connection_id=connection.id,
            platform_message_id=mid, direction="in", text="racer", sent_at=T0, created_at=T0,
        )
    )  # fmt: skip
    return racer


def test_a_delivery_takes_the_touch_lock_before_its_message_key(engine, connection):
    """The lock order that keeps deliveries out of deadlocks: a delivery waiting for its
    message's key (a concurrent delivery of the same message has not committed) already
    holds the conversation's touch lock, so it cannot wait for a row lock later while
    holding that key, and nobody waiting for the key can hold the lock it needs."""
    _postgresql_only(engine)
    first = _recv(engine, connection, "m1", sent_at=T0)
    cid = first.conversation_id
    racer = _insert_uncommitted(engine, connection, cid, "m2")
    with ThreadPoolExecutor(1) as pool:
        try:
            delivery = pool.submit(
                _recv, engine, connection, "m2", sent_at=T0 + timedelta(seconds=5)
            )
            _until(lambda: _lock_waits(engine) >= 1, "the delivery never waited for the racer")
            with (
                engine.connect() as probe,
                probe.begin(),
                pytest.raises(sa.exc.OperationalError) as held,
            ):
                probe.execute(
                    sa.select(conversations.c.id)
                    .where(conversations.c.id == cid)
                    .with_for_update(key_share=True, nowait=True)
                )
            assert held.value.orig.sqlstate == "55P03"  # lock_not_available
        finally:
            racer.close()  # rolls back: the delivery stores its message
        second = delivery.result(timeout=10)
    assert not second.duplicate and second.conversation_id == cid
    assert _conversation(engine, cid).last_message_at == T0 + timedelta(seconds=5)


def test_an_exclusive_delivery_and_its_twin_do_not_deadlock(engine, connection):
    """The interleaving that deadlocked, forced step by step: a delivery of ``m2`` whose
    statement snapshot predates a touch that committed, while a caller's transaction (the
    exclusive path) holds the conversation's touch lock and delivers ``m2`` too.

    ``SKIP LOCKED`` does not skip there: the row version the delivery's snapshot sees was
    updated by a committed transaction and is key-share locked (by the delivery itself),
    so PostgreSQL follows the update chain, and that walk waits for the holder of the
    newer version whatever the wait policy (when the holder's transaction id is the
    older one). If the delivery has stored its message by then, and the exclusive
    delivery waits for that message's key, each waits for the other. Both must complete,
    the second one as a duplicate."""
    _postgresql_only(engine)
    from noclash.chat.sql.touch import touch

    first = _recv(engine, connection, "m1", sent_at=T0)
    cid = first.conversation_id
    at = T0 + timedelta(seconds=5)
    racer = _insert_uncommitted(engine, connection, cid, "m2")
    began, lock_now, go = threading.Event(), threading.Event(), threading.Event()

    def toucher() -> None:
        with engine.begin() as conn:
            touch(conn, cid, T0 + timedelta(seconds=1), reopen_snoozed=False)

    def exclusive():
        with engine.begin() as conn:
            # A caller's transaction that began first: its transaction id is the older.
            conn.exec_driver_sql("SELECT pg_current_xact_id()")
            began.set()
            lock_now.wait(10)
            conn.execute(
                sa.select(conversations.c.id)
                .where(conversations.c.id == cid)
                .with_for_update(key_share=True)
            )
            go.wait(10)
            return _recv(conn, connection, "m2", sent_at=at)

    with ThreadPoolExecutor(3) as pool:
        try:
            twin = pool.submit(exclusive)
            assert began.wait(10)
            normal = pool.submit(_recv, engine, connection, "m2", sent_at=at)
            _until(lambda: _lock_waits(engine) >= 1, "the delivery never waited for the racer")
            touched = pool.submit(toucher)
            time.sleep(0.2)
            lock_now.set()
            time.sleep(0.2)
        finally:
            lock_now.set()
            racer.close()  # rolls back: the delivery stores its message
        time.sleep(0.3)
        go.set()
        results = [normal.result(timeout=20), twin.result(timeout=20)]
        touched.result(timeout=20)
    assert sorted(r.duplicate for r in results) == [False, True]
    assert {r.message_id for r in results} == {results[0].message_id}
    assert _stored_mids(engine, cid) == ["m1", "m2"]
    assert _conversation(engine, cid).last_message_at == at
