"""The active-conversation lookup is served by the partial unique index (PostgreSQL EXPLAIN).

Seed 002 expected its lookup to use the composite ``(connection, psid, status)`` index.
The partial index is the better path: it holds only active rows, so its size does not grow
with closed history, and it is the same index that guarantees uniqueness.
"""

from __future__ import annotations

import sqlalchemy as sa

from noclash.chat.conversations import active_conversation_query, find_active
from noclash.db.tables import conversations
from noclash.db.types import utcnow
from noclash.unique import uuid7
from tests.support.factories import make_chatbot, make_connection

INDEX = "uq_conversations_active_connection_id_psid"


def _history(engine, customers: int = 300, closed_each: int = 6):
    """Many customers, each with one active conversation and a closed history."""
    bot = make_chatbot(engine)
    connection = make_connection(engine, bot.id)
    now = utcnow()
    rows = []
    for c in range(customers):
        for k in range(closed_each + 1):
            active = k == closed_each
            rows.append({
                "id": uuid7(), "chatbot_id": bot.id, "connection_id": connection.id,
                "psid": f"psid-{c}", "status": "OPEN" if active else "CLOSED",
                "slug": f"c-{c}-{k}", "created_at": now, "last_message_at": now,
                "closed_at": None if active else now,
            })  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.insert(conversations), rows)
        conn.execute(sa.text("ANALYZE"))
    return connection


def _plan(engine, query) -> str:
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            lines = conn.exec_driver_sql(f"EXPLAIN {compiled}").scalars().all()
        else:
            lines = [r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
    return "\n".join(lines)


def test_active_lookup_uses_the_partial_index(engine):
    connection = _history(engine)
    query = active_conversation_query(connection.id, "psid-123")
    plan = _plan(engine, query)
    if engine.dialect.name == "postgresql":
        assert f"Index Scan using {INDEX}" in plan, plan
    else:
        # SQLite's planner may pick either index: both are an equality search on every
        # column (``status IN`` becomes two probes), never a table scan.
        assert "SEARCH conversations USING INDEX" in plan, plan
        assert INDEX in plan or "ix_conversations_connection_id_psid_status" in plan, plan
    with engine.connect() as conn:
        row = find_active(conn, connection.id, "psid-123")
    assert row is not None and row.status == "OPEN" and row.slug == "c-123-6"
