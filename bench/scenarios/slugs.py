"""Scenario 2, slugs: create a conversation whose title is already taken by K rows.

Each contender gets its own chatbot (slugs are unique per chatbot) holding K conversations
of the same title: the plain slug and K - 1 suffixed ones, as seed 004 would have made
them. Every round starts from exactly those K rows (the previous round's creates are
deleted outside the timed part), so K does not drift.

- ``seed-004``: the SELECT loop (plain slug, then up to nine ``-xxxx`` letter suffixes),
  then the INSERT; under concurrency two creates can pick the same free slug and the
  second INSERT fails: those failures are the errors column;
- ``noclash``: :func:`noclash.chat.conversations.insert_conversation`, one
  ``INSERT ... ON CONFLICT DO NOTHING`` per candidate, the database decides;
- ``limit``: one INSERT of a slug made unique in advance (``base-<uuid>``).

The seed loop and the limit write into a copy of the schema without its triggers
(:meth:`bench.databases.Databases.bare_db`): on SQLite those register noclash's slugs.

K = 0 means the title is new: every create gets a title nobody has used. With several
writers, the same new title is created by all of them at once (creates are grouped by
ticket, ``writers`` per title), which is the race seed 004 loses: both SELECTs see the
plain slug free, both INSERT it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.databases import noclash_engine, seed_engine
from bench.harness import CaseSpec, Config, Contender, Op
from bench.scenarios import Env, make_owner
from bench.seeds import seed_004_create_conversation
from noclash.chat.conversations import insert_conversation
from noclash.db.dialects import dialect_for
from noclash.db.tables import conversation_slugs, conversations
from noclash.db.types import utcnow
from noclash.unique import uuid4, uuid7
from noclash.unique.slugs import slugify

CONTENDERS = ("seed-004", "noclash", "limit")
TITLE = "Weekly support sync"
BASE = slugify(TITLE)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_BATCH = 2_000


def _prepopulate(engine: Engine, chatbot_id: UUID, k: int) -> UUID:
    """K conversations titled TITLE (plain slug + K - 1 suffixed); return the last id."""
    slugs = [BASE] if k else []
    taken: set[str] = set()
    while len(slugs) < k:
        suffix = "".join(random.choices(_LETTERS, k=4))
        if suffix not in taken:
            taken.add(suffix)
            slugs.append(f"{BASE}-{suffix}")
    now = utcnow()
    last = uuid7()
    rows = []
    for slug in slugs:
        last = uuid7()
        rows.append(
            {"id": last, "chatbot_id": chatbot_id, "status": "CLOSED", "title": TITLE,
             "slug": slug, "created_at": now, "closed_at": now}
        )
    with engine.begin() as conn:
        for i in range(0, len(rows), _BATCH):
            batch = rows[i : i + _BATCH]
            conn.execute(sa.insert(conversations), batch)
            # On SQLite the schema's triggers have registered the slugs already.
            conn.execute(
                dialect_for(conn).insert(conversation_slugs).on_conflict_do_nothing(),
                [
                    {"chatbot_id": chatbot_id, "slug": r["slug"], "conversation_id": r["id"],
                     "created_at": now}
                    for r in batch
                ],
            )
    return uuid7() if not rows else last


def _reset(engine: Engine, chatbot_id: UUID, last_seeded: UUID) -> None:
    """Delete what earlier rounds created, so each round starts from the same K rows."""
    with engine.begin() as conn:
        conn.execute(
            sa.delete(conversation_slugs).where(
                conversation_slugs.c.chatbot_id == chatbot_id,
                conversation_slugs.c.conversation_id > last_seeded,
            )
        )
        conn.execute(
            sa.delete(conversations).where(
                conversations.c.chatbot_id == chatbot_id, conversations.c.id > last_seeded
            )
        )


class _Titles:
    """The title of each create: TITLE for K > 0; for K = 0 a new title per group."""

    def __init__(self, k: int, writers: int) -> None:
        self.k, self.writers = k, writers
        self.round = 0
        self._tickets = itertools.count()

    def restart(self, round_: int) -> None:
        self.round = round_
        self._tickets = itertools.count()

    def next(self) -> str:
        if self.k:
            return TITLE
        return f"{TITLE} {self.round}-{next(self._tickets) // self.writers}"


@contextmanager
def _build(env: Env, dialect: str, writers: int, k: int) -> Iterator[list[Contender]]:
    url = env.databases.noclash_db(dialect)
    bare_url = env.databases.bare_db(dialect)
    engine = noclash_engine(url, writers)
    # Seed 004's schema had a unique slug and no registry: like the limit, it writes into
    # the tables without noclash's triggers (the registry ones, on SQLite).
    seeds = seed_engine(bare_url, writers)
    bare_engine = noclash_engine(bare_url, writers)
    engines = {"seed-004": seeds, "noclash": engine, "limit": bare_engine}
    owners = {name: make_owner(engines[name], tag=name) for name in CONTENDERS}
    seeded = {
        name: _prepopulate(engines[name], o.chatbot_id, k) for name, o in owners.items()
    }
    titles = {name: _Titles(k, writers) for name in CONTENDERS}

    def before(name: str, round_: int) -> None:
        _reset(engines[name], owners[name].chatbot_id, seeded[name])
        titles[name].restart(round_)

    def seed_op(_w: int, _i: int) -> None:
        bot, title = owners["seed-004"].chatbot_id, titles["seed-004"].next()
        with seeds.begin() as conn:
            seed_004_create_conversation(conn, chatbot_id=bot, title=title, now=utcnow())

    def noclash_op(_w: int, _i: int) -> None:
        bot, title = owners["noclash"].chatbot_id, titles["noclash"].next()
        with engine.begin() as conn:
            insert_conversation(conn, chatbot_id=bot, title=title)

    bare = sa.insert(conversations)

    def limit_op(_w: int, _i: int) -> None:
        bot, title = owners["limit"].chatbot_id, titles["limit"].next()
        values = {
            "id": uuid7(),
            "chatbot_id": bot,
            "status": "OPEN",
            "title": title,
            "slug": f"{BASE}-{uuid4().hex}",
            "created_at": utcnow(),
        }
        with bare_engine.begin() as conn:
            conn.execute(bare, values)

    ops: dict[str, tuple[str, Op, Engine]] = {
        "seed-004": ("seed", seed_op, seeds),
        "noclash": ("noclash", noclash_op, engine),
        "limit": ("limit", limit_op, bare_engine),
    }
    try:
        yield [
            Contender(name, role, op, engines=[eng], before_round=partial(before, name))
            for name, (role, op, eng) in ops.items()
        ]
    finally:
        for eng in engines.values():
            eng.dispose()
        env.databases.drop(url)
        env.databases.drop(bare_url)


def specs(env: Env, config: Config) -> list[CaseSpec]:
    return [
        CaseSpec(
            "slugs", dialect, writers, f"K={k}", CONTENDERS,
            partial(_build, env, dialect, writers, k),
        )
        for dialect in env.dialects
        for k in config.slug_ks
        for writers in config.writers
    ]
