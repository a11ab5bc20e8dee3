"""noclash's own schema, populated by its own code, gives the doctor nothing to report.

This test may use noclash's chat code: it is the *subject* here, the doctor still only
reads the catalog. A finding on this database would be a false positive by construction
(every rule in noclash/db/tables.py is the doctor's advice).
"""

from __future__ import annotations

from noclash.chat.chatbots import create_chatbot
from noclash.chat.connections import create_connection
from noclash.chat.inbound import receive_message
from noclash.chat.lifecycle import close
from noclash.chat.sessions import start_session
from noclash.chat.users import create_user
from noclash.db.engine import create_engine
from noclash.doctor import diagnose


def test_populated_noclash_database_is_clean(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        owner, _token = create_user(engine, "owner@example.com")
        for i in range(3):
            create_user(engine, f"user{i}@example.com")
        with engine.begin() as conn:
            bots = [create_chatbot(conn, owner_id=owner.id, name=f"bot {i}") for i in range(30)]
            page = create_connection(
                conn,
                chatbot_id=bots[0].id,
                owner_id=owner.id,
                channel="messenger",
                external_id="page-1",
            )
            for bot in bots[:25]:
                start_session(conn, bot)
        results = [
            receive_message(
                engine,
                connection_id=page.id,
                psid=f"psid-{i % 10}",
                platform_message_id=f"mid-{i}",
                text=f"hello {i}",
            )
            for i in range(40)
        ]
        with engine.begin() as conn:
            for r in results[:5]:
                close(conn, r.conversation_id, owner_id=owner.id)
        # The same customers write again after their conversations were closed.
        for i in range(40, 45):
            receive_message(
                engine,
                connection_id=page.id,
                psid=f"psid-{i % 10}",
                platform_message_id=f"mid-{i}",
                text="back again",
            )
    finally:
        engine.dispose()
    report = diagnose(database_url)
    assert report.findings == [], [f"{f.check}: {f.message}" for f in report.findings]
