"""Scenario 3, active conversation: inbound messages, redelivered webhooks included.

Two cases per database:

- **many psids** (at each writer count): a stream of deliveries where every customer sends
  three messages and every fourth delivery is a redelivery of the one before it (Meta and
  Telegram redeliver webhooks they think failed). With several writers, a customer's
  messages and a message's redelivery run at the same time.
- **one psid** (``burst_writers`` threads, 64 in a full run): bursts in which every thread
  delivers a message for the same new customer at the same instant, each message twice
  (pairs of threads share a message id), so the first message of a conversation and its
  redelivery race every time.

Contenders:

- ``seed-002``: its schema (no unique index on the active conversation, none on message
  ids) and its five application checks before the INSERTs (:class:`bench.seeds.Seed002`);
- ``noclash``: :func:`noclash.chat.inbound.receive_message`, the one inbound path;
- ``limit``: a bare message INSERT into a conversation known in advance, in a copy of the
  schema without its triggers (:meth:`bench.databases.Databases.bare_db`).

After the case the database is read for what matters more than speed: active
conversations beyond one per (connection, psid), and messages stored more than once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine

from bench.databases import noclash_engine, seed_engine
from bench.harness import CaseSpec, Config, Contender, Op
from bench.scenarios import Env, make_owner
from bench.seeds import Seed002, seed_002_metadata
from noclash.chat.inbound import receive_message
from noclash.db import tables
from noclash.db.tables import ACTIVE_STATUSES
from noclash.db.types import utcnow
from noclash.unique import uuid7

CONTENDERS = ("seed-002", "noclash", "limit")
MESSAGES_PER_CUSTOMER = 3
REDELIVER_EVERY = 4


class Deliveries:
    """The delivery stream of one contender: ``(psid, message id)`` per op.

    ``many``: ticket t -> the t-th delivery; every REDELIVER_EVERY-th delivery repeats the
    previous message. ``burst``: worker w in burst b -> customer b, message w // 2.
    """

    def __init__(self, burst: bool) -> None:
        self.burst = burst
        self.round = 0
        self._tickets = itertools.count()

    def restart(self, round_: int) -> None:
        self.round = round_
        self._tickets = itertools.count()

    def next(self, worker: int, seq: int) -> tuple[str, str]:
        r = self.round
        if self.burst:
            return f"r{r}-b{seq}", f"r{r}-b{seq}-m{worker // 2}"
        t = next(self._tickets)
        # Deliveries t = 0, 1, 2, 3(=2 again), 4, 5, 6, 7(=6 again), ...
        message = t - (t + 1) // REDELIVER_EVERY
        return f"r{r}-c{message // MESSAGES_PER_CUSTOMER}", f"r{r}-m{message}"


def violations(engine: Engine, meta: MetaData, connection_id: UUID) -> dict[str, int]:
    """Active conversations beyond one per (connection, psid); messages stored twice."""
    c, m = meta.tables["conversations"], meta.tables["messages"]
    active = (
        sa.select(sa.func.count().label("n"))
        .where(c.c.status.in_(ACTIVE_STATUSES), c.c.connection_id == connection_id)
        .group_by(c.c.connection_id, c.c.psid)
        .subquery()
    )
    stored = (
        sa.select(sa.func.count().label("n"))
        .where(m.c.platform_message_id.is_not(None), m.c.connection_id == connection_id)
        .group_by(m.c.connection_id, m.c.platform_message_id)
        .subquery()
    )
    with engine.connect() as conn:
        dup_active = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(active.c.n - 1), 0))
        ).scalar_one()
        dup_messages = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(stored.c.n - 1), 0))
        ).scalar_one()
    return {"dup_active": int(dup_active), "dup_messages": int(dup_messages)}


@contextmanager
def _build(env: Env, dialect: str, writers: int, burst: bool) -> Iterator[list[Contender]]:
    url = env.databases.noclash_db(dialect)
    seed_url = env.databases.empty_db(dialect)
    bare_url = env.databases.bare_db(dialect)
    engine = noclash_engine(url, writers)
    bare_engine = noclash_engine(bare_url, writers)
    seeds = seed_engine(seed_url, writers)
    seed_meta = seed_002_metadata()
    seed_meta.create_all(seeds)
    seed = Seed002(seed_meta)
    seed_owner = make_owner(seeds, seed_meta, tag="seed-002")
    owner = make_owner(engine, tag="noclash")
    limit_owner = make_owner(bare_engine, tag="limit")
    known = uuid7()
    with bare_engine.begin() as conn:
        conn.execute(
            sa.insert(tables.conversations).values(
                id=known, chatbot_id=limit_owner.chatbot_id,
                connection_id=limit_owner.connection_id, psid="known", status="OPEN",
                slug="known", created_at=utcnow(),
            )
        )
    streams = {name: Deliveries(burst) for name in CONTENDERS}

    def seed_op(w: int, i: int) -> None:
        psid, mid = streams["seed-002"].next(w, i)
        now = utcnow()
        with seeds.begin() as conn:
            seed.receive(
                conn, chatbot_id=seed_owner.chatbot_id, connection_id=seed_owner.connection_id,
                psid=psid, platform_message_id=mid, text="hello, is anyone there?",
                username=None, now=now,
            )

    def noclash_op(w: int, i: int) -> None:
        psid, mid = streams["noclash"].next(w, i)
        receive_message(
            engine, connection_id=owner.connection_id, psid=psid, platform_message_id=mid,
            text="hello, is anyone there?", sent_at=utcnow(),
        )

    bare = sa.insert(tables.messages)

    def limit_op(w: int, i: int) -> None:
        _psid, mid = streams["limit"].next(w, i)
        now = utcnow()
        values = {
            "id": uuid7(), "conversation_id": known, "connection_id": limit_owner.connection_id,
            "platform_message_id": f"{mid}-{uuid7().hex}", "direction": "in",
            "text": "hello, is anyone there?", "sent_at": now, "created_at": now,
        }
        with bare_engine.begin() as conn:
            conn.execute(bare, values)

    def restart(name: str, round_: int) -> None:
        streams[name].restart(round_)

    checks: dict[str, Callable[[], dict[str, int]]] = {
        "seed-002": partial(violations, seeds, seed_meta, seed_owner.connection_id),
        "noclash": partial(violations, engine, tables.metadata, owner.connection_id),
        "limit": partial(violations, bare_engine, tables.metadata, limit_owner.connection_id),
    }
    ops: dict[str, tuple[str, Op, Engine]] = {
        "seed-002": ("seed", seed_op, seeds),
        "noclash": ("noclash", noclash_op, engine),
        "limit": ("limit", limit_op, bare_engine),
    }
    try:
        yield [
            Contender(
                name, role, op, engines=[eng], before_round=partial(restart, name),
                check=checks[name],
            )
            for name, (role, op, eng) in ops.items()
        ]
    finally:
        for eng in (engine, seeds, bare_engine):
            eng.dispose()
        for db in (url, seed_url, bare_url):
            env.databases.drop(db)


def specs(env: Env, config: Config) -> list[CaseSpec]:
    out = []
    for dialect in env.dialects:
        for writers in config.writers:
            out.append(
                CaseSpec(
                    "active", dialect, writers, "many psids", CONTENDERS,
                    partial(_build, env, dialect, writers, False),
                )
            )
        out.append(
            CaseSpec(
                "active", dialect, config.burst_writers, "one psid", CONTENDERS,
                partial(_build, env, dialect, config.burst_writers, True), burst=True,
            )
        )
    return out
