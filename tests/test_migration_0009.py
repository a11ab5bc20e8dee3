"""Migration 0009 on a populated database, on SQLite and PostgreSQL.

It rebuilds ``events`` on SQLite (its UNIQUE constraint on ``seq`` becomes a partial
unique index), and a rebuild with foreign keys on would cascade into the deliveries that
point at events. Populated at revision 0008 with sequenced and unsequenced events and a
webhook delivery, upgraded: every row is still there, ``seq`` is still unique, unnumbered
events may be many, the readers' lookups still use the indexes, and the downgrade puts the
constraint back.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from noclash.db.dialects import dialect_for
from noclash.db.engine import create_engine
from noclash.db.migrate import downgrade_engine, upgrade_engine
from noclash.db.tables import metadata
from noclash.db.types import utcnow
from noclash.unique import uuid7
from tests.support.migrations import insert_owner

TABLES = ["chatbots", "conversations", "events", "deliveries"]


def _populate(conn) -> sa.Row:
    t = metadata.tables
    now = utcnow()
    _user, bot = insert_owner(conn, now)
    conversation = uuid7()
    conn.execute(t["conversations"].insert().values(
        id=conversation, chatbot_id=bot, psid="p", status="OPEN", slug="p", created_at=now,
    ))  # fmt: skip
    for n in range(6):
        event = uuid7()
        conn.execute(t["events"].insert().values(
            id=event, seq=n + 1 if n < 3 else None, chatbot_id=bot,
            conversation_id=conversation, type="message.created", subject=f"m-{n}",
            payload={"n": n}, created_at=now,
        ))  # fmt: skip
    conn.execute(t["deliveries"].insert().values(
        id=uuid7(), event_id=event, destination="webhook", conversation_id=conversation,
        status="queued", attempts=0, next_attempt_at=now, created_at=now, updated_at=now,
    ))  # fmt: skip
    return conn.execute(sa.select(t["chatbots"].c.id)).one()


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(sa.select(sa.func.count()).select_from(metadata.tables[name]))
            .scalar_one()
            for name in TABLES
        }


def _definitions(engine) -> dict[str, bool]:
    """Each index on events: whether it holds only sequenced rows (``seq IS NOT NULL``),
    read from the catalog's own definition."""
    query = (
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'"
        if engine.dialect.name == "postgresql"
        else "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
    )
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(query).all()
    return {
        name: "seq is not null" in (sql or "").lower().replace("(", "").replace(")", "")
        for name, sql in rows
        if name.startswith(("ix_", "uq_events_seq"))
    }


def test_0009_keeps_every_event_and_the_uniqueness_of_seq(fresh_url):
    engine = create_engine(fresh_url)
    try:
        upgrade_engine(engine, "0008")
        with engine.begin() as conn:
            bot = _populate(conn).id
        before = _counts(engine)
        upgrade_engine(engine, "head")
        assert _counts(engine) == before
        events = metadata.tables["events"]
        indexes = {i["name"]: i for i in sa.inspect(engine).get_indexes("events")}
        assert indexes["uq_events_seq"]["unique"]
        assert _definitions(engine) == {
            "uq_events_seq": True, "ix_events_chatbot_id_seq": True,
            "ix_events_conversation_id_seq": True, "ix_events_unsequenced": False,
        }  # fmt: skip
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.update(events).where(events.c.seq.is_(None)).values(seq=2))
        with engine.begin() as conn:  # unsequenced events: any number, none in the indexes
            assert conn.execute(
                sa.select(sa.func.count()).where(events.c.seq.is_(None))
            ).scalar_one() == 3
        if dialect_for(engine).name == "sqlite":
            with engine.connect() as conn:
                plan = " ".join(
                    str(row[-1])
                    for row in conn.exec_driver_sql(
                        "EXPLAIN QUERY PLAN SELECT * FROM events "
                        "WHERE chatbot_id = ? AND seq > ? ORDER BY seq",
                        (bot.hex, 1),
                    )
                )
            assert "ix_events_chatbot_id_seq" in plan, plan
        downgrade_engine(engine, "0008")
        assert _counts(engine) == before
        constraints = sa.inspect(engine).get_unique_constraints("events")
        assert "uq_events_seq" in {c["name"] for c in constraints}
    finally:
        engine.dispose()
