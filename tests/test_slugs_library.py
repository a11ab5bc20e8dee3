"""Slug allocation through the library on SQLite and PostgreSQL: volume, races, renames."""

from __future__ import annotations

import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

import noclash.unique.slugs as slug_rules
from noclash.chat.conversations import insert_conversation
from noclash.chat.slugs import former_slugs, keeps_slug, rename_conversation
from noclash.db.tables import conversation_slugs, conversations
from tests.support.factories import make_chatbot, make_user

TITLE = "Navigate to example.com"
BASE = "navigate-to-example-com"


def _registry_matches(engine) -> None:
    """Every current slug is registered to its own conversation (the registry invariant)."""
    with engine.connect() as conn:
        orphans = conn.execute(
            sa.select(sa.func.count())
            .select_from(conversations)
            .outerjoin(
                conversation_slugs,
                sa.and_(
                    conversation_slugs.c.chatbot_id == conversations.c.chatbot_id,
                    conversation_slugs.c.slug == conversations.c.slug,
                    conversation_slugs.c.conversation_id == conversations.c.id,
                ),
            )
            .where(conversation_slugs.c.slug.is_(None))
        ).scalar_one()
    assert orphans == 0


def test_5000_creates_with_one_title(engine, monkeypatch):
    """5,000 creates of one title in 10 transactions finish with no error, one plain slug
    and 4,999 distinct suffixed ones.

    The suffix alphabet is narrowed to ten letters (10,000 four-letter suffixes, half of
    them taken by the end) so that hundreds of attempts collide in the real unique index
    and the suffix has to grow; every collision is still decided by the database, nothing
    else is replaced. With the real 36-letter alphabet the same run would almost never
    collide twice in a row, and the growth path would go untested.
    """
    monkeypatch.setattr(slug_rules, "ALPHABET", "abcdefghij")
    bot = make_chatbot(engine)
    total, batch = 5000, 500
    found: list[str] = []
    for _ in range(total // batch):
        with engine.begin() as conn:
            for _ in range(batch):
                row, created = insert_conversation(conn, chatbot_id=bot.id, title=TITLE)
                assert created
                found.append(row.slug)
    assert len(set(found)) == total
    assert found.count(BASE) == 1 and found[0] == BASE
    lengths = Counter(len(s) - len(BASE) - 1 for s in found if s != BASE)
    assert all(re.fullmatch(re.escape(BASE) + r"-[a-j]{4,}", s) for s in found[1:])
    assert min(lengths) == 4
    assert lengths[5] >= 10, lengths  # the suffix grew, many times
    _registry_matches(engine)


def test_keeps_slug_rules(engine):
    bot = make_chatbot(engine)
    with engine.begin() as conn:
        titled, _ = insert_conversation(conn, chatbot_id=bot.id, title="Hello World")
        untitled, _ = insert_conversation(conn, chatbot_id=bot.id, slug_source="Where is it?")
    assert keeps_slug(titled, "hello-world")
    assert not keeps_slug(titled, "hello")  # not a prefix match: "hello-world" != "hello"
    assert keeps_slug(untitled, "where-is-it")
    assert not keeps_slug(untitled, "where")


def test_rename_history_and_take_back(engine):
    owner = make_user(engine)
    bot = make_chatbot(engine, owner_id=owner.id)
    with engine.begin() as conn:
        conv, _ = insert_conversation(conn, chatbot_id=bot.id, title="One")
    for title in ("Two", "Three", "One"):
        with engine.begin() as conn:
            conv = rename_conversation(conn, conv.id, owner_id=owner.id, title=title)
    assert conv.slug == "one" and conv.title == "One"
    with engine.connect() as conn:
        assert former_slugs(conn, conv.id) == ["two", "three"]
    _registry_matches(engine)


def test_creates_and_renames_racing_for_one_slug(engine):
    """10 creates and 10 renames of one title, held at a barrier: no error (no deadlock on
    PostgreSQL, since both take the two unique keys in the same order), distinct slugs."""
    owner = make_user(engine)
    bot = make_chatbot(engine, owner_id=owner.id)
    with engine.begin() as conn:
        existing = [
            insert_conversation(conn, chatbot_id=bot.id, title=f"old {i}")[0].id for i in range(10)
        ]
    barrier = threading.Barrier(20)

    def create(_: object) -> str:
        barrier.wait()
        with engine.begin() as conn:
            return insert_conversation(conn, chatbot_id=bot.id, title="Hot Topic")[0].slug

    def rename(cid: object) -> str:
        barrier.wait()
        with engine.begin() as conn:
            return rename_conversation(conn, cid, owner_id=owner.id, title="Hot Topic").slug

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(create, i) for i in range(10)]
        futures += [pool.submit(rename, cid) for cid in existing]
        found = [f.result() for f in futures]
    assert len(set(found)) == 20 and found.count("hot-topic") == 1
    _registry_matches(engine)
