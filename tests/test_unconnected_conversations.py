"""One active conversation per customer also without a connection, on SQLite and PostgreSQL.

Conversations created through the API with a ``psid`` and no connection (and those a
deleted connection leaves behind) are held by
``uq_conversations_active_unconnected_chatbot_id_psid``: a create beside an active one is a
409 naming it, so are reopens, and 16 creates held at a Barrier give one 201.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from noclash.chat.conversations import insert_conversation
from noclash.db.tables import conversations
from tests.support.factories import make_chatbot


def _create(client, bot: str, **body):
    return client.post(f"/api/chatbots/{bot}/conversations", json=body)


def test_a_second_create_for_the_customer_is_409_naming_the_active_one(live_server):
    client = live_server.client(live_server.user())
    bot = client.post("/api/chatbots", json={"name": "b"}).json()["id"]
    other_bot = client.post("/api/chatbots", json={"name": "c"}).json()["id"]
    first = _create(client, bot, psid="cust-1", title="Order")
    assert first.status_code == 201, first.text
    again = _create(client, bot, psid="cust-1", title="Order again")
    assert again.status_code == 409, again.text
    problem = again.json()
    assert problem["type"] == "https://noclash.dev/problems/conflict"
    assert problem["fields"] == ["psid"] and problem["conversation_id"] == first.json()["id"]
    # Other customers, the same customer in another chatbot, no psid at all: no clash.
    assert _create(client, bot, psid="cust-2").status_code == 201
    assert _create(client, other_bot, psid="cust-1").status_code == 201
    assert _create(client, bot).status_code == 201 and _create(client, bot).status_code == 201

    # Snoozed is still active; closed is not.
    conv = first.json()["id"]
    assert client.post(f"/api/conversations/{conv}/snooze").status_code == 200
    assert _create(client, bot, psid="cust-1").status_code == 409
    assert client.post(f"/api/conversations/{conv}/close").status_code == 200
    second = _create(client, bot, psid="cust-1")
    assert second.status_code == 201
    # Reopening the closed one beside the new one: 409 naming the new one.
    reopen = client.post(f"/api/conversations/{conv}/reopen")
    assert reopen.status_code == 409
    assert reopen.json()["fields"] == ["psid"]
    assert reopen.json()["conversation_id"] == second.json()["id"]
    listed = client.get("/api/conversations", params={"psid": "cust-1", "chatbot_id": bot}).json()
    assert sorted(c["status"] for c in listed["items"]) == ["CLOSED", "OPEN"]


def test_16_concurrent_creates_for_one_customer_give_one_conversation(live_server):
    token = live_server.user()
    client = live_server.client(token)
    bot = client.post("/api/chatbots", json={"name": "b"}).json()["id"]
    workers = 16
    barrier = threading.Barrier(workers)
    clients = [live_server.client(token) for _ in range(workers)]

    def create(n: int):
        barrier.wait()
        return _create(clients[n], bot, psid="racing", title=f"attempt {n}")

    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(create, range(workers)))
    assert sorted(r.status_code for r in answers) == [201] + [409] * (workers - 1)
    winner = next(r for r in answers if r.status_code == 201).json()["id"]
    assert {r.json()["conversation_id"] for r in answers if r.status_code == 409} == {winner}
    with live_server.engine.connect() as conn:
        rows = conn.execute(
            sa.select(conversations.c.id, conversations.c.status).where(
                conversations.c.psid == "racing"
            )
        ).all()
    assert [str(r.id) for r in rows] == [winner]


def test_the_library_claim_returns_the_active_one_without_a_connection(engine):
    """insert_conversation with a psid and no connection is a claim like the channel path:
    the second call gets the first row back, created=False, and writes nothing."""
    bot = make_chatbot(engine)
    with engine.begin() as conn:
        first, created = insert_conversation(conn, chatbot_id=bot.id, psid="p", title="x")
        again, created_again = insert_conversation(conn, chatbot_id=bot.id, psid="p", title="y")
        closed, created_closed = insert_conversation(
            conn, chatbot_id=bot.id, psid="p", status="CLOSED"
        )
    assert created and not created_again and again.id == first.id
    assert created_closed and closed.id != first.id  # closed history is unlimited
