"""Migration 0007 on a populated database, on SQLite and PostgreSQL.

The hazard it is written against: SQLite rebuilds ``connections`` (a CHECK and a UNIQUE
constraint cannot change in place), and with foreign keys on, dropping the old table
would cascade into every conversation and message. Populated at revision 0005, upgraded,
every row must still be there, the triggers of migrations 0002 and 0003 must still work,
older duplicate active API conversations are closed (the newest stays), and a downgrade
refuses while custom connections exist.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from noclash.db.engine import create_engine
from noclash.db.migrate import downgrade_engine, upgrade_engine
from noclash.db.tables import metadata
from noclash.db.types import utcnow
from noclash.unique import uuid4, uuid7
from tests.support.migrations import insert_owner

TABLES = ["users", "chatbots", "connections", "conversations", "conversation_slugs",
          "messages", "sessions"]  # fmt: skip


def _populate(conn) -> None:
    """Rows written into the 0005 schema: only columns it has, named explicitly."""
    t = metadata.tables
    now = utcnow()
    _user, bot = insert_owner(conn, now)
    page = uuid7()
    conn.execute(t["connections"].insert().values(
        id=page, chatbot_id=bot, channel="messenger", external_id="page-1", created_at=now,
    ))  # fmt: skip
    rows = []
    for i, (connection_id, psid, status) in enumerate([
        (page, "p1", "OPEN"),
        (page, "p1", "CLOSED"),
        (None, "api-1", "OPEN"),      # older duplicate: closed by the migration
        (None, "api-1", "SNOOZED"),   # the newest active one: stays
        (None, "api-2", "OPEN"),
        (None, None, "OPEN"),
    ]):  # fmt: skip
        cid = uuid7()
        rows.append(cid)
        conn.execute(t["conversations"].insert().values(
            id=cid, chatbot_id=bot, connection_id=connection_id, psid=psid, status=status,
            slug=f"s{i}", created_at=now + timedelta(seconds=i),
        ))  # fmt: skip
        conn.execute(t["messages"].insert().values(
            id=uuid7(), conversation_id=cid, connection_id=connection_id,
            platform_message_id=f"m{i}" if connection_id else None, direction="out",
            text=f"hello {i}", created_at=now,
        ))  # fmt: skip
    conn.execute(t["sessions"].insert().values(id=uuid7(), session_id=uuid4(), chatbot_id=bot,
                                               connection_id=page, conversation_id=rows[0],
                                               created_at=now))  # fmt: skip


def _counts(conn) -> dict[str, int]:
    return {
        name: conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar() for name in TABLES
    }


def test_upgrade_keeps_every_row_and_the_triggers(fresh_url):
    engine = create_engine(fresh_url)
    try:
        upgrade_engine(engine, "0005")
        with engine.begin() as conn:
            _populate(conn)
            before = _counts(conn)
        upgrade_engine(engine)
        with engine.connect() as conn:
            assert _counts(conn) == before
            statuses = dict(
                conn.execute(
                    sa.text("SELECT slug, status FROM conversations ORDER BY slug")
                ).all()
            )
            channel = conn.execute(sa.text("SELECT channel FROM connections")).scalar()
        assert statuses == {"s0": "OPEN", "s1": "CLOSED", "s2": "CLOSED", "s3": "SNOOZED",
                            "s4": "OPEN", "s5": "OPEN"}  # fmt: skip
        assert channel == "messenger"

        # The schema at head works: a custom connection, a second active API conversation
        # refused by the new index, and on SQLite the 0002/0003 triggers still fire.
        conversations = metadata.tables["conversations"]
        messages = metadata.tables["messages"]
        with engine.begin() as conn:
            bot = conn.execute(sa.select(metadata.tables["chatbots"].c.id)).scalar()
            conn.execute(sa.insert(metadata.tables["connections"]).values(
                id=uuid7(), chatbot_id=bot, channel="custom", external_id="page-1",
                created_at=utcnow(),
            ))  # fmt: skip
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.insert(conversations).values(
                id=uuid7(), chatbot_id=bot, psid="api-2", status="OPEN", slug="dup",
                created_at=utcnow(),
            ))  # fmt: skip
        with engine.begin() as conn:
            cid = uuid7()
            conn.execute(sa.insert(conversations).values(
                id=cid, chatbot_id=bot, psid="api-3", status="SNOOZED", slug="fresh",
                created_at=utcnow(),
            ))  # fmt: skip
            conn.execute(sa.insert(messages).values(
                id=uuid7(), conversation_id=cid, direction="in", text="x", created_at=utcnow(),
            ))  # fmt: skip
            woken = conn.execute(
                sa.select(conversations.c.status).where(conversations.c.id == cid)
            ).scalar()
            registered = conn.execute(
                sa.text("SELECT count(*) FROM conversation_slugs WHERE slug = 'fresh'")
            ).scalar()
        if engine.dialect.name == "sqlite":
            assert woken == "OPEN" and registered == 1  # migrations 0003 and 0002
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []

        # Down again: refused while a custom connection exists, then possible.
        with pytest.raises(RuntimeError, match="custom connections"):
            downgrade_engine(engine, "0005")
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM connections WHERE channel = 'custom'"))
        downgrade_engine(engine, "0005")
        with engine.connect() as conn:
            assert _counts(conn)["messages"] == before["messages"] + 1
    finally:
        engine.dispose()
