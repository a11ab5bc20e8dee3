"""Scenario 1, tokens: create a chatbot.

- ``seed-000``: a random UUID checked with a SELECT, then the INSERT (two statements);
- ``noclash``: :func:`noclash.chat.chatbots.create_chatbot`, one INSERT ... RETURNING with
  the database's ``gen_random_uuid()`` default on PostgreSQL;
- ``limit``: a bare INSERT of the same row (no RETURNING, nothing checked).

All three run one transaction per create on the same database, so the commit, the row
and the unique index on ``public_token`` cost the same for each; the only difference is
the uniqueness work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.databases import noclash_engine, seed_engine
from bench.harness import CaseSpec, Config, Contender
from bench.scenarios import Env, make_owner
from bench.seeds import seed_000_create_chatbot
from noclash.chat.chatbots import create_chatbot
from noclash.db.dialects import dialect_for
from noclash.db.tables import chatbots
from noclash.db.types import utcnow
from noclash.unique import uuid4, uuid7

CONTENDERS = ("seed-000", "noclash", "limit")


@contextmanager
def _build(env: Env, dialect: str, writers: int) -> Iterator[list[Contender]]:
    url = env.databases.noclash_db(dialect)
    engine = noclash_engine(url, writers)
    seeds = seed_engine(url, writers)
    owner = make_owner(engine)
    server_token = dialect_for(engine).server_generates_uuid4

    def seed_op(_w: int, _i: int) -> None:
        with seeds.begin() as conn:
            seed_000_create_chatbot(conn, owner_id=owner.user_id, name="bench", now=utcnow())

    def noclash_op(_w: int, _i: int) -> None:
        with engine.begin() as conn:
            create_chatbot(conn, owner_id=owner.user_id, name="bench")

    bare = sa.insert(chatbots)

    def limit_op(_w: int, _i: int) -> None:
        values = {
            "id": uuid7(),
            "owner_id": owner.user_id,
            "name": "bench",
            "slack_channel_id": None,
            "asana_project_id": None,
            "require_auth": False,
            "created_at": utcnow(),
        }
        if not server_token:
            values["public_token"] = uuid4()
        with engine.begin() as conn:
            conn.execute(bare, values)

    try:
        yield [
            Contender("seed-000", "seed", seed_op, engines=[seeds]),
            Contender("noclash", "noclash", noclash_op, engines=[engine]),
            Contender("limit", "limit", limit_op, engines=[engine]),
        ]
        _check_unique(engine)
    finally:
        engine.dispose()
        seeds.dispose()
        env.databases.drop(url)


def _check_unique(engine: Engine) -> None:
    """Every chatbot has a distinct token (the unique index guarantees it; this reads it)."""
    with engine.connect() as conn:
        total, distinct = conn.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(chatbots.c.public_token)))
        ).one()
    if total != distinct:  # pragma: no cover - the index forbids it
        raise AssertionError(f"{total - distinct} duplicate public tokens")


def specs(env: Env, config: Config) -> list[CaseSpec]:
    return [
        CaseSpec(
            "tokens", dialect, writers, "create chatbot", CONTENDERS,
            partial(_build, env, dialect, writers),
        )
        for dialect in env.dialects
        for writers in config.writers
    ]
