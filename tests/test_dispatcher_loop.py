"""The dispatcher's event loop never waits for the database.

Its transactions run on the loop where they cannot wait (PostgreSQL through psycopg's
asyncio driver, SQLite on a connection that fails at once while another one writes) and
in a worker thread otherwise, so a database that holds its write lock for a while delays
the dispatcher's next claim, never its sends or its other tasks. On SQLite the connection
that never waits skips the checkpoint, which a thread does instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from noclash.config import Settings
from noclash.db.dialects import dialect_for
from noclash.db.engine import create_engine
from noclash.dispatch import Dispatcher
from noclash.dispatch.dispatcher import MAX_AHEAD
from tests.support.outbound import RunningDispatcher, outbound_stack
from tests.support.platforms import wait_for

HOLD_SECONDS = 1.5


@pytest.fixture
def stack(database_url):
    with outbound_stack(database_url) as s:
        yield s


async def _ticks(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(0.01)
        now = time.monotonic()
        gaps.append(now - last)
        last = now


def _hold_write_lock(url: str) -> sa.Connection:
    """A transaction that holds what a claim needs: SQLite's write lock, PostgreSQL's
    ``deliveries`` table."""
    engine = create_engine(url)
    conn = engine.connect()
    conn.begin()
    if dialect_for(engine).supports_listen_notify:  # PostgreSQL: lock the outbox
        conn.exec_driver_sql("LOCK TABLE deliveries IN EXCLUSIVE MODE")
    else:  # SQLite: BEGIN IMMEDIATE took the database's write lock
        conn.exec_driver_sql("SELECT 1")
    return conn


def test_a_held_write_lock_never_stalls_the_dispatchers_loop(stack, database_url):
    bot = stack.chatbot()
    connection, _token = stack.telegram_connection(bot["id"])
    conversation = stack.telegram_customer(connection, 5550001, "hello", update_id=1)
    first = stack.reply(conversation["id"], "before").json()
    stack.wait_delivery(conversation["id"], first["id"], "sent")

    loop = stack.dispatcher._loop
    assert loop is not None
    stop, gaps = asyncio.Event(), []
    ticking = asyncio.run_coroutine_threadsafe(_ticks(stop, gaps), loop)
    holder = _hold_write_lock(database_url)
    try:
        time.sleep(HOLD_SECONDS)  # the dispatcher polls for work every 50 ms meanwhile
    finally:
        holder.rollback()
        holder.close()
        holder.engine.dispose()
    after = stack.reply(conversation["id"], "after").json()
    stack.wait_delivery(conversation["id"], after["id"], "sent")
    loop.call_soon_threadsafe(stop.set)
    ticking.result(timeout=5)
    assert max(gaps) < 0.3, f"the loop stalled for {max(gaps):.2f} s"
    assert [m["text"] for m in stack.telegram.delivered()] == ["before", "after"]


def test_the_sqlite_connection_that_never_waits(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'quick.db'}"
    engine = create_engine(url)
    dialect = dialect_for(engine)
    quick = dialect.nonblocking_engine(engine)
    assert quick is not None
    try:
        with quick.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 0
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        holder = sqlite3.connect(tmp_path / "quick.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError) as failed, quick.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        assert dialect.is_busy(failed.value.orig) and time.monotonic() - started < 0.5
        holder.rollback()
        holder.close()
        main_file = tmp_path / "quick.db"
        with quick.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (n INTEGER, filler TEXT)")
            for n in range(2000):
                conn.exec_driver_sql("INSERT INTO t VALUES (?, ?)", (n, "x" * 200))
        # The commit only appended to the log: the main file has none of it yet ...
        assert main_file.stat().st_size < 100_000
        dialect.checkpoint(engine)
        # ... until a checkpoint, which the dispatcher runs in a thread.
        assert main_file.stat().st_size > 400_000
    finally:
        quick.dispose()
        engine.dispose()


def test_a_dispatcher_claims_further_ahead_while_its_claims_are_slow(engine):
    """A claim waits for turns of the loop that runs the sends: the busier the loop, the
    more the senders finish while a claim is on its way, and the further ahead the
    dispatcher claims (within bounds), so they never wait with nothing to send; once
    claims are quick again it holds no more than its concurrency ahead."""
    dispatcher = Dispatcher(engine, Settings(dispatcher_concurrency=8))
    assert dispatcher._claim_wanted() == 16  # the sends in flight and as many ahead
    dispatcher._pace(finished=2)  # a quick claim: 4 x 2 is within the concurrency
    assert dispatcher._claim_wanted() == 16
    for _ in range(8):  # slow claims: 40 sends finished during each one
        dispatcher._pace(finished=40)
    assert dispatcher._claim_wanted() == 8 + MAX_AHEAD * 8
    dispatcher._ready.extend([None] * 20)  # claimed ahead, not yet sent
    assert dispatcher._claim_wanted() == 8 + MAX_AHEAD * 8 - 20
    dispatcher._ready.clear()
    for _ in range(8):
        dispatcher._pace(finished=0)
    assert dispatcher._claim_wanted() == 16


def test_a_claim_waiting_past_its_lease_is_left_to_the_next_claim_not_sent(database_url):
    """Two dispatchers that claimed far ahead (their claims had been slow), then a
    platform that slows down: the deliveries claimed ahead wait longer than their lease
    allows a send to start. Each dispatcher leaves those unsent until the lease ends, then
    one of them takes them over; none is sent twice, where a send started past the lease
    would race the dispatcher that took the delivery over."""
    settings = {
        "dispatcher_concurrency": 1,
        "delivery_lease_seconds": 1.2,  # a send may start up to 0.7 s after its claim
        "platform_timeout_seconds": 0.5,
    }
    with outbound_stack(database_url, dispatcher=False, **settings) as stack:
        bot = stack.chatbot()
        connection, _token = stack.telegram_connection(bot["id"])
        for n in range(8):
            conversation = stack.telegram_customer(connection, 5550100 + n, "hi", update_id=n)
            assert stack.reply(conversation["id"], f"reply {n}").status_code == 201
        stack.telegram.latency = 0.4  # two sends take 0.8 s: a third claimed would start late
        pair = [
            RunningDispatcher(stack.server.engine, stack.server.settings, name=f"d{i}")
            for i in range(2)
        ]
        for running in pair:
            running.dispatcher._ahead = MAX_AHEAD  # as after slow claims: 1 + 3 per claim
            running.start()
        try:
            assert wait_for(lambda: len(stack.telegram.delivered()) >= 8, timeout=30)
            time.sleep(1.5)  # a second send of any of them would arrive by now
        finally:
            for running in pair:
                running.stop()
        texts = [m["text"] for m in stack.telegram.delivered()]
        assert sorted(texts) == sorted(f"reply {n}" for n in range(8))  # each once
        assert sum(running.dispatcher.outlived for running in pair) > 0
