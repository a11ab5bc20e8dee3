"""Migration 0011 on a populated database, on SQLite and PostgreSQL.

Populated at revision 0010 with numbered events (the highest not the last made: numbers
are given after commit) and unnumbered ones, upgraded: the counter starts at the highest
``seq`` held, so the unnumbered events are numbered after it; the table holds one row
only; the downgrade drops it, and an upgrade of an empty database starts it at 0.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from noclash.chat import events as chat_events
from noclash.db.engine import create_engine
from noclash.db.migrate import downgrade_engine, upgrade_engine
from noclash.db.tables import metadata
from noclash.db.types import utcnow
from noclash.unique import uuid7
from tests.support.migrations import insert_owner

# The seq of each event made at revision 0010, in id order (None: not numbered yet).
SEQS = [1, 2, 7, 5, None, None]


def _populate(conn) -> None:
    t = metadata.tables
    now = utcnow()
    _user, bot = insert_owner(conn, now)
    for n, seq in enumerate(SEQS):
        conn.execute(t["events"].insert().values(
            id=uuid7(), seq=seq, chatbot_id=bot, type="message.created", subject=f"m-{n}",
            payload={"n": n}, created_at=now,
        ))  # fmt: skip


def _counter(conn) -> list[tuple[int, int]]:
    return [tuple(r) for r in conn.exec_driver_sql("SELECT one, last_seq FROM event_sequence")]


def test_0011_starts_the_counter_at_the_highest_seq(fresh_url):
    engine = create_engine(fresh_url)
    try:
        upgrade_engine(engine, "0010")
        with engine.begin() as conn:
            _populate(conn)
        upgrade_engine(engine, "0011")
        with engine.connect() as conn:
            assert _counter(conn) == [(1, 7)]
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # one row
            conn.exec_driver_sql("INSERT INTO event_sequence (one, last_seq) VALUES (2, 0)")
        with engine.begin() as conn:
            assert chat_events.sequence(conn) == 2
        events = metadata.tables["events"]
        with engine.connect() as conn:
            seqs = list(conn.scalars(sa.select(events.c.seq).order_by(events.c.id)))
            assert seqs == [1, 2, 7, 5, 8, 9]
            assert _counter(conn) == [(1, 9)]
        downgrade_engine(engine, "0010")
        assert "event_sequence" not in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:  # the events stay as they are
            assert list(conn.scalars(sa.select(events.c.seq).order_by(events.c.id))) == seqs
    finally:
        engine.dispose()


def test_0011_on_a_database_without_events_starts_at_0(fresh_url):
    engine = create_engine(fresh_url)
    try:
        upgrade_engine(engine, "0011")
        with engine.connect() as conn:
            assert _counter(conn) == [(1, 0)]
    finally:
        engine.dispose()
