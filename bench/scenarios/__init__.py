"""The scenarios, in the order they run, and the fixtures they share.

Each scenario module exposes ``specs(env, config) -> list[CaseSpec]``: one spec per
dialect, writer count and parameter, each building its own fresh databases when run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine

from bench.databases import Databases
from bench.harness import CaseSpec, Config
from noclash.db import tables
from noclash.db.types import utcnow
from noclash.unique import uuid4, uuid7
from noclash.unique.ids import token_hash


@dataclass
class Env:
    """What every scenario gets: the databases and the dialects to run on."""

    databases: Databases
    dialects: tuple[str, ...]


@dataclass(frozen=True)
class Owner:
    user_id: UUID
    chatbot_id: UUID
    connection_id: UUID


def make_owner(engine: Engine, meta: MetaData = tables.metadata, tag: str = "") -> Owner:
    """A user, a chatbot and a Messenger connection, inserted directly.

    Direct INSERTs (not the noclash functions) so that the same helper fills seed 002's
    schema too.
    """
    t = meta.tables
    now = utcnow()
    user_id, bot_id, conn_id = uuid7(), uuid7(), uuid7()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(t["users"]).values(
                id=user_id,
                email=f"bench-{user_id.hex}@example.com",
                token_hash=token_hash(user_id.hex),
                is_admin=False,
                created_at=now,
            )
        )
        conn.execute(
            sa.insert(t["chatbots"]).values(
                id=bot_id,
                owner_id=user_id,
                name=f"bench bot {tag}",
                public_token=uuid4(),
                require_auth=False,
                created_at=now,
            )
        )
        conn.execute(
            sa.insert(t["connections"]).values(
                id=conn_id,
                chatbot_id=bot_id,
                channel="messenger",
                external_id=f"page-{conn_id.hex}",
                created_at=now,
            )
        )
    return Owner(user_id, bot_id, conn_id)


def registry() -> dict[str, Callable[[Env, Config], list[CaseSpec]]]:
    """Scenario name -> spec factory, in run order."""
    from bench.scenarios import active, events, http, outbound, slugs, tokens

    return {
        "tokens": tokens.specs,
        "slugs": slugs.specs,
        "active": active.specs,
        "http": http.specs,
        "stream": events.stream_specs,
        "events": events.specs,
        "outbound": outbound.specs,
    }


SCENARIOS = ("tokens", "slugs", "active", "http", "stream", "events", "outbound")
