"""insert_conversation: the active claim and the slug, decided by the database."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from noclash.chat.conversations import assign_slug, insert_conversation
from noclash.db.tables import conversation_slugs, conversations
from tests.support.factories import make_chatbot, make_connection


def _create(engine, **kwargs):
    with engine.begin() as conn:
        return insert_conversation(conn, **kwargs)


def test_plain_slug_first_then_suffix(engine):
    bot = make_chatbot(engine)
    first, created1 = _create(engine, chatbot_id=bot.id, title="Navigate to example.com")
    second, created2 = _create(engine, chatbot_id=bot.id, title="Navigate to example.com!")
    assert created1 and created2
    assert first.slug == "navigate-to-example-com"
    base, _, suffix = second.slug.rpartition("-")
    assert base == first.slug and len(suffix) == 4 and suffix.isalnum() and suffix.islower()


def test_fallback_bases(engine):
    bot = make_chatbot(engine)
    emoji, _ = _create(engine, chatbot_id=bot.id, title="🎉🎉")
    from_message, _ = _create(engine, chatbot_id=bot.id, slug_source="Where is my order?")
    assert emoji.slug == "conversation"
    assert from_message.slug == "where-is-my-order"


def test_every_slug_is_registered(engine):
    bot = make_chatbot(engine)
    rows = [_create(engine, chatbot_id=bot.id, title="same")[0] for _ in range(5)]
    with engine.connect() as conn:
        registry = dict(
            conn.execute(
                sa.select(conversation_slugs.c.slug, conversation_slugs.c.conversation_id)
            ).all()
        )
    assert registry == {r.slug: r.id for r in rows}


def test_former_slug_is_not_handed_out_again(engine):
    bot = make_chatbot(engine)
    renamed, _ = _create(engine, chatbot_id=bot.id, title="hello")
    with engine.begin() as conn:
        moved = assign_slug(conn, renamed, iter(["goodbye"]))
    assert moved.slug == "goodbye"
    newcomer, _ = _create(engine, chatbot_id=bot.id, title="hello")
    assert newcomer.slug.startswith("hello-")


def test_claim_returns_the_active_conversation(engine):
    bot = make_chatbot(engine)
    conn_row = make_connection(engine, bot.id)
    first, created = _create(engine, chatbot_id=bot.id, connection_id=conn_row.id, psid="p1")
    again, created_again = _create(engine, chatbot_id=bot.id, connection_id=conn_row.id, psid="p1")
    assert created and not created_again and again.id == first.id
    with engine.begin() as conn:
        conn.execute(
            sa.update(conversations).where(conversations.c.id == first.id).values(status="CLOSED")
        )
    fresh, created_fresh = _create(engine, chatbot_id=bot.id, connection_id=conn_row.id, psid="p1")
    assert created_fresh and fresh.id != first.id


def test_concurrent_claims_create_one_active_conversation(engine):
    bot = make_chatbot(engine)
    conn_row = make_connection(engine, bot.id)
    writers = 16
    barrier = threading.Barrier(writers)

    def claim(_: int):
        barrier.wait()
        return _create(
            engine, chatbot_id=bot.id, connection_id=conn_row.id, psid="racer", title="Race"
        )

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(claim, range(writers)))
    assert sum(created for _, created in results) == 1
    assert len({row.id for row, _ in results}) == 1
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(conversations)).scalar()
    assert count == 1


def test_concurrent_creates_with_one_title_get_distinct_slugs(engine):
    bot = make_chatbot(engine)
    writers = 24
    barrier = threading.Barrier(writers)

    def create(_: int):
        barrier.wait()
        return _create(engine, chatbot_id=bot.id, title="Hot title")[0].slug

    with ThreadPoolExecutor(writers) as pool:
        slugs = list(pool.map(create, range(writers)))
    assert len(set(slugs)) == writers
    assert slugs.count("hot-title") == 1


def test_one_statement_tries_two_slugs_and_stores_at_most_one(engine):
    """``claim_attempt``: the plain slug row, else the fallback row, never both."""
    from noclash.chat.conversations import claim_attempt
    from noclash.db.types import utcnow
    from noclash.unique import uuid7

    bot = make_chatbot(engine)

    def attempt(slug, fallback):
        values = {
            "id": uuid7(), "chatbot_id": bot.id, "connection_id": None, "psid": None,
            "status": "OPEN", "title": None, "slug": slug, "fallback_slug": fallback,
            "created_at": utcnow(), "closed_at": None, "last_message_at": None,
        }
        with engine.begin() as conn:
            row, registered = claim_attempt(conn, values)
        assert row is None or registered
        return row.slug if row is not None else None

    assert attempt("plain", "plain-aaaa") == "plain"  # free: the plain slug, not both
    assert attempt("plain", "plain-aaaa") == "plain-aaaa"  # taken: the fallback
    assert attempt("plain", "plain-aaaa") is None  # both taken: nothing
    with engine.connect() as conn:
        slugs = conn.execute(
            sa.select(conversations.c.slug).where(conversations.c.chatbot_id == bot.id)
        ).scalars()
        registry = conn.execute(
            sa.select(conversation_slugs.c.slug).where(conversation_slugs.c.chatbot_id == bot.id)
        ).scalars()
        assert sorted(slugs) == sorted(registry) == ["plain", "plain-aaaa"]
