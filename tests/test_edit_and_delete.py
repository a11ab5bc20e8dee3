"""Editing and deleting chatbots and connections, and the custom channel, over real HTTP on
SQLite and PostgreSQL.

What a DELETE does to history is the contract here: a chatbot's delete removes everything
it holds (checked in SQL, table by table); a connection's delete closes and keeps its
conversations and messages, detached. Both are one transaction: deliveries racing a
connection's delete either land before it (and are kept) or get a 404, never a 500 and
never a message acknowledged and then lost.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from noclash.db import tables

PROBLEM = "application/problem+json"


def _bot(client, **extra) -> dict:
    r = client.post("/api/chatbots", json={"name": "support", **extra})
    assert r.status_code == 201, r.text
    return r.json()


def _connection(client, bot: dict, channel: str = "custom", external_id: str = "sms") -> dict:
    r = client.post(
        f"/api/chatbots/{bot['id']}/connections",
        json={"channel": channel, "external_id": external_id},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _inbound(client, connection: dict, psid: str, mid: str, text: str = "hi"):
    return client.post(
        f"/api/connections/{connection['id']}/inbound",
        json={"psid": psid, "message_id": mid, "text": text},
    )


def _rows(engine, table, **where) -> list:
    query = sa.select(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with engine.connect() as conn:
        return list(conn.execute(query))


# -- PATCH /api/chatbots/{id} --------------------------------------------------------------
def test_patch_changes_only_what_it_is_given(live_server):
    client = live_server.client(live_server.user())
    bot = _bot(client, slack_channel_id="C1", asana_project_id="A1")
    r = client.patch(f"/api/chatbots/{bot['id']}", json={"name": "Sales", "require_auth": True})
    assert r.status_code == 200, r.text
    assert r.json() == bot | {"name": "Sales", "require_auth": True}
    cleared = client.patch(f"/api/chatbots/{bot['id']}", json={"slack_channel_id": None})
    assert cleared.json() == bot | {"name": "Sales", "require_auth": True, "slack_channel_id": None}
    assert client.patch(f"/api/chatbots/{bot['id']}", json={}).json() == cleared.json()
    assert client.get(f"/api/chatbots/{bot['id']}").json() == cleared.json()
    # The public view follows at once (a widget of a require_auth chatbot now needs a token).
    public = live_server.client().get(f"/api/public/chatbots/{bot['public_token']}")
    assert public.status_code == 401


def test_patch_refuses_what_cannot_be_stored_and_changes_nothing(live_server):
    client = live_server.client(live_server.user())
    bot = _bot(client)
    for body, field in [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"require_auth": None}, "require_auth"),
        ({"require_auth": "yes"}, "require_auth"),
        ({"public_token": str(uuid.uuid4())}, "public_token"),
        ({"id": str(uuid.uuid4())}, "id"),
        ({"owner_id": str(uuid.uuid4())}, "owner_id"),
    ]:
        r = client.patch(f"/api/chatbots/{bot['id']}", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in {f["field"] for f in r.json()["fields"]}
    assert client.get(f"/api/chatbots/{bot['id']}").json() == bot
    assert client.patch("/api/chatbots/nope", json={"name": "x"}).status_code == 404


# -- DELETE /api/chatbots/{id} -------------------------------------------------------------
def test_deleting_a_chatbot_removes_everything_it_holds(live_server):
    client = live_server.client(live_server.user())
    bot, other = _bot(client), _bot(client)
    custom = _connection(client, bot)
    for i in range(3):
        assert _inbound(client, custom, f"p{i}", f"m{i}").status_code == 201
    conversation = client.post(f"/api/chatbots/{bot['id']}/conversations", json={}).json()
    client.patch(f"/api/conversations/{conversation['id']}", json={"title": "Renamed"})
    visitor = live_server.client()
    session = visitor.post(f"/api/widget/{bot['public_token']}/sessions").json()
    sent = f"/api/widget/{bot['public_token']}/sessions/{session['session_id']}/messages"
    assert visitor.post(sent, json={"text": "hello"}).status_code == 201
    kept = _connection(client, other, external_id="kept")
    assert _inbound(client, kept, "p", "m").status_code == 201

    r = client.delete(f"/api/chatbots/{bot['id']}")
    assert r.status_code == 204 and r.content == b""
    engine = live_server.engine
    gone = uuid.UUID(bot["id"])
    for table in (tables.connections, tables.conversations, tables.conversation_slugs,
                  tables.sessions):  # fmt: skip
        assert _rows(engine, table, chatbot_id=gone) == [], table.name
    assert _rows(engine, tables.chatbots, id=gone) == []
    with engine.connect() as conn:
        orphans = conn.execute(
            sa.select(sa.func.count())
            .select_from(tables.messages)
            .where(~tables.messages.c.conversation_id.in_(sa.select(tables.conversations.c.id)))
        ).scalar()
    assert orphans == 0
    assert len(_rows(engine, tables.messages)) == 1  # the other chatbot's message
    assert client.get(f"/api/chatbots/{other['id']}").status_code == 200
    assert client.delete(f"/api/chatbots/{bot['id']}").status_code == 404
    assert visitor.post(sent, json={"text": "again"}).status_code == 404


# -- DELETE /api/connections/{id} ----------------------------------------------------------
def test_deleting_a_connection_keeps_its_history_detached(live_server):
    client = live_server.client(live_server.user())
    bot = _bot(client)
    custom, other = _connection(client, bot), _connection(client, bot, external_id="email")
    open_ = _inbound(client, custom, "open", "m1").json()["conversation_id"]
    _inbound(client, custom, "open", "m2")
    snoozed = _inbound(client, custom, "snoozed", "m3").json()["conversation_id"]
    client.post(f"/api/conversations/{snoozed}/snooze")
    closed = _inbound(client, custom, "closed", "m4").json()["conversation_id"]
    client.post(f"/api/conversations/{closed}/close")
    elsewhere = _inbound(client, other, "open", "m1").json()["conversation_id"]
    before = {c: client.get(f"/api/conversations/{c}/messages").json() for c in (open_, snoozed)}

    r = client.delete(f"/api/connections/{custom['id']}")
    assert r.status_code == 204, r.text
    assert client.get(f"/api/connections/{custom['id']}").status_code == 404
    assert _inbound(client, custom, "open", "m9").status_code == 404
    for conversation_id in (open_, snoozed, closed):
        got = client.get(f"/api/conversations/{conversation_id}").json()
        assert got["status"] == "CLOSED" and got["connection_id"] is None, got
        assert got["closed_at"] and got["snoozed_until"] is None
    assert client.get(f"/api/conversations/{open_}").json()["psid"] == "open"
    for conversation_id, page in before.items():
        after = client.get(f"/api/conversations/{conversation_id}/messages").json()
        assert after["items"] == [m | {"connection_id": None} for m in page["items"]]
    listed = client.get("/api/conversations", params={"psid": "open"}).json()["items"]
    assert {c["id"] for c in listed} == {open_, elsewhere}
    assert client.get(f"/api/conversations/{elsewhere}").json()["status"] == "OPEN"

    # A detached conversation is an unconnected one: it reopens, and then holds the
    # customer's one active API conversation.
    assert client.post(f"/api/conversations/{open_}/reopen").json()["status"] == "OPEN"
    taken = client.post(f"/api/chatbots/{bot['id']}/conversations", json={"psid": "open"})
    assert taken.status_code == 409 and taken.json()["conversation_id"] == open_
    assert client.post(f"/api/conversations/{closed}/reopen").json()["status"] == "OPEN"
    clash = client.post(f"/api/conversations/{snoozed}/reopen")
    assert clash.status_code == 200  # another customer ("snoozed"): no clash
    assert client.delete(f"/api/connections/{custom['id']}").status_code == 404


def test_deleting_a_widget_connection_ends_its_sessions_and_keeps_the_conversations(live_server):
    owner = live_server.client(live_server.user())
    bot = _bot(owner)
    visitor = live_server.client()
    session = visitor.post(f"/api/widget/{bot['public_token']}/sessions").json()
    sent = f"/api/widget/{bot['public_token']}/sessions/{session['session_id']}/messages"
    assert visitor.post(sent, json={"text": "hello"}).status_code == 201
    [widget] = owner.get(f"/api/chatbots/{bot['id']}/connections").json()["items"]
    assert owner.delete(f"/api/connections/{widget['id']}").status_code == 204
    assert visitor.post(sent, json={"text": "still there?"}).status_code == 404
    kept = owner.get(f"/api/conversations/{session['conversation_id']}").json()
    assert kept["status"] == "CLOSED" and kept["connection_id"] is None
    assert len(owner.get(f"/api/conversations/{kept['id']}/messages").json()["items"]) == 1
    # The widget keeps working: the next visitor's session makes a new widget connection.
    again = visitor.post(f"/api/widget/{bot['public_token']}/sessions")
    assert again.status_code == 201
    assert again.json()["conversation_id"] != session["conversation_id"]


def test_deliveries_racing_a_connection_delete_are_kept_or_refused(live_server):
    """24 deliveries and the delete held at one Barrier: every delivery answered 201 is
    stored, detached, in a closed conversation; the others are 404; nothing else."""
    client = live_server.client(live_server.user())
    bot = _bot(client)
    custom = _connection(client, bot)
    for i in range(4):  # four active conversations, so the delete has rows to close
        assert _inbound(client, custom, f"p{i}", f"warm-{i}").status_code == 201
    workers = 24
    barrier = threading.Barrier(workers + 1)
    clients = [live_server.client(client.headers["authorization"].split()[1]) for _ in range(25)]

    def deliver(n: int):
        barrier.wait()
        return n, _inbound(clients[n], custom, f"p{n % 6}", f"race-{n}")

    def delete():
        barrier.wait()
        return clients[-1].delete(f"/api/connections/{custom['id']}")

    with ThreadPoolExecutor(workers + 1) as pool:
        deliveries = [pool.submit(deliver, n) for n in range(workers)]
        deleted = pool.submit(delete).result()
        answers = [f.result() for f in deliveries]
    assert deleted.status_code == 204, deleted.text
    statuses = sorted({r.status_code for _n, r in answers})
    assert set(statuses) <= {201, 404}, [(n, r.status_code, r.text) for n, r in answers]
    engine = live_server.engine
    stored = {m.platform_message_id: m for m in _rows(engine, tables.messages)}
    for n, r in answers:
        if r.status_code == 201:
            message = stored[f"race-{n}"]
            assert message.connection_id is None and str(message.id) == r.json()["message_id"]
        else:
            assert f"race-{n}" not in stored
    for conversation in _rows(engine, tables.conversations):
        assert conversation.connection_id is None and conversation.status == "CLOSED"


# -- the custom channel ---------------------------------------------------------------------
def test_custom_names_are_per_chatbot_platform_ids_are_global(live_server):
    """A custom channel's external_id is its owner's name, unique in the chatbot: 8
    creates of "sms" per tenant held at a Barrier give one 201 per chatbot. A platform id
    is global: 16 creates of one page id across both tenants give one 201 in all."""
    owners = [live_server.client(live_server.user()) for _ in range(2)]
    bots = [_bot(owner) for owner in owners]
    page = f"page-{uuid.uuid4().hex}"
    jobs = [(i % 2, "custom", "sms") for i in range(16)]
    jobs += [(i % 2, "messenger", page) for i in range(16)]
    barrier = threading.Barrier(len(jobs))

    def create(job):
        tenant, channel, external_id = job
        barrier.wait()
        return job, owners[tenant].post(
            f"/api/chatbots/{bots[tenant]['id']}/connections",
            json={"channel": channel, "external_id": external_id},
        )

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(create, jobs))
    for tenant in (0, 1):
        customs = [r for (t, ch, _e), r in results if t == tenant and ch == "custom"]
        assert sorted(r.status_code for r in customs) == [201] + [409] * 7
        refused = next(r for r in customs if r.status_code == 409).json()
        assert refused["fields"] == ["chatbot_id", "external_id"]
        assert refused["constraint"] == "uq_connections_chatbot_id_external_id_custom"
    pages = [r for (_t, ch, _e), r in results if ch == "messenger"]
    assert sorted(r.status_code for r in pages) == [201] + [409] * 15
    refused = next(r for r in pages if r.status_code == 409).json()
    assert refused["fields"] == ["channel", "external_id"]
    assert refused["constraint"] == "uq_connections_channel_external_id"
    rows = _rows(live_server.engine, tables.connections)
    assert len(rows) == 3


def test_a_custom_connection_delivers_like_any_channel(live_server):
    client = live_server.client(live_server.user())
    bot = _bot(client)
    sms = _connection(client, bot)
    assert sms["channel"] == "custom"
    first = _inbound(client, sms, "+15550100", "sms-1", "Where is my parcel?")
    assert first.status_code == 201 and first.json()["created_conversation"] is True
    again = _inbound(client, sms, "+15550100", "sms-1", "Where is my parcel?")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    conversation = client.get(f"/api/conversations/{first.json()['conversation_id']}").json()
    assert conversation["slug"] == "where-is-my-parcel"
    assert conversation["connection_id"] == sms["id"]
