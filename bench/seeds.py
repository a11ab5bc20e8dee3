"""The seeds' fixes, re-written faithfully in Python as benchmark contenders.

Each function does what the seed's code does, statement for statement, on noclash's
tables (or, for seed 002, on the schema that seed left behind), so that the benchmark
measures the approach and not a translation artefact:

- seed 000 ``generatePublicToken``: up to 5 times, a random UUID and
  ``SELECT 1 FROM chatbots WHERE public_token = ? LIMIT 1``; then the INSERT.
- seed 004 ``generate_unique_slug``: ``SELECT 1 ... WHERE slug = ?`` for the plain slug,
  then for up to nine ``base-xxxx`` candidates (4 random letters a-z); after ten tries a
  UUID-prefixed slug, unchecked; then the INSERT.
- seed 002: the unique constraint on (connection, psid) dropped and replaced by "duplicate
  prevention in code": the initial search, PSID matching and username matching that skip
  CLOSED conversations, the STRICT CHECK and the FINAL CHECK, then the INSERT, then the
  conditional ``lastMessageAt`` update. Its schema (see :func:`seed_002_metadata`) has no
  partial unique index, and message ids are deduplicated by a SELECT in code too.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import Index, MetaData, UniqueConstraint
from sqlalchemy.engine import Connection

from noclash.db import tables
from noclash.db.tables import ACTIVE_STATUSES, chatbots, conversations
from noclash.unique import uuid7
from noclash.unique.slugs import slugify

# -- seed 000: SELECT-then-INSERT public token -------------------------------------------------

_TOKEN_TAKEN = sa.select(sa.literal(1)).where(chatbots.c.public_token == sa.bindparam("t")).limit(1)


class TokenExhausted(RuntimeError):
    """Seed 000's 'Could not generate a unique public token after 5 attempts'."""


def seed_000_create_chatbot(conn: Connection, *, owner_id: UUID, name: str, now: datetime) -> None:
    """``generatePublicToken()`` then ``INSERT INTO chatbots (...)`` (no RETURNING)."""
    for _ in range(5):
        token = uuid.uuid4()
        if conn.execute(_TOKEN_TAKEN, {"t": token}).first() is None:
            break
    else:
        raise TokenExhausted("Could not generate a unique public token after 5 attempts")
    conn.execute(
        sa.insert(chatbots).values(
            id=uuid7(),
            owner_id=owner_id,
            name=name,
            slack_channel_id=None,
            asana_project_id=None,
            public_token=token,
            require_auth=False,
            created_at=now,
        )
    )


# -- seed 004: SELECT loop for a free slug -----------------------------------------------------

_SLUG_TAKEN = sa.select(sa.literal(1)).where(
    conversations.c.chatbot_id == sa.bindparam("c"), conversations.c.slug == sa.bindparam("s")
)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def seed_004_unique_slug(conn: Connection, chatbot_id: UUID, base_slug: str) -> str:
    """``generate_unique_slug``: check, append a random 4-letter suffix, up to 10 checks."""
    slug = base_slug
    attempts = 0
    while attempts < 10:
        exists = conn.execute(_SLUG_TAKEN, {"c": chatbot_id, "s": slug}).first() is not None
        if not exists:
            return slug
        suffix = "".join(random.choice(_LETTERS) for _ in range(4))
        slug = f"{base_slug}-{suffix}"
        attempts += 1
    return f"{base_slug}-{str(uuid.uuid4()).split('-')[0]}"


def seed_004_create_conversation(
    conn: Connection, *, chatbot_id: UUID, title: str, now: datetime
) -> None:
    """The seed's ``create_conversation``: the slug loop, then a plain INSERT."""
    slug = seed_004_unique_slug(conn, chatbot_id, slugify(title) or "conversation")
    conn.execute(
        sa.insert(conversations).values(
            id=uuid7(),
            chatbot_id=chatbot_id,
            status="OPEN",
            title=title,
            slug=slug,
            created_at=now,
        )
    )


# -- seed 002: no unique index, duplicate prevention in code -----------------------------------


def seed_002_metadata() -> MetaData:
    """noclash's tables as seed 002 left them: no unique key on the active conversation.

    Dropped: the partial unique index on (connection, psid) (the seed removed its
    ``@@unique`` so closed conversations could repeat) and the unique key on message ids
    (the seed prevents duplicates "in code"). The composite non-unique indexes the seed
    added stay, so its SELECTs are index lookups as in the seed.
    """
    meta = MetaData(naming_convention=tables.metadata.naming_convention)
    for table in tables.metadata.sorted_tables:
        table.to_metadata(meta)
    conv = meta.tables["conversations"]
    for index in list(conv.indexes):
        if index.name == "uq_conversations_active_connection_id_psid":
            conv.indexes.remove(index)
    msgs = meta.tables["messages"]
    for constraint in list(msgs.constraints):
        if isinstance(constraint, UniqueConstraint):
            msgs.constraints.remove(constraint)
    Index("ix_messages_connection_id_platform_message_id", msgs.c.connection_id,
          msgs.c.platform_message_id)
    return meta


class Seed002:
    """Seed 002's inbound handling on its own schema (see :func:`seed_002_metadata`)."""

    def __init__(self, meta: MetaData) -> None:
        self.conversations = c = meta.tables["conversations"]
        connections = meta.tables["connections"]
        self._connection = sa.select(connections.c.id, connections.c.chatbot_id).where(
            connections.c.id == sa.bindparam("k")
        )
        self.messages = m = meta.tables["messages"]
        active = c.c.status.in_(ACTIVE_STATUSES)
        key = sa.and_(c.c.connection_id == sa.bindparam("k"), c.c.psid == sa.bindparam("p"))
        self._known_message = sa.select(m.c.id).where(
            m.c.connection_id == sa.bindparam("k"), m.c.platform_message_id == sa.bindparam("mid")
        ).limit(1)
        # 1. Initial search: an OPEN/SNOOZED conversation, most recent first.
        self._initial = (
            sa.select(c.c.id).where(key, active).order_by(c.c.last_message_at.desc()).limit(1)
        )
        # 2. PSID matching: every conversation of the psid, CLOSED ones skipped in code.
        self._by_psid = sa.select(c.c.id, c.c.status).where(key).order_by(c.c.created_at.desc())
        # 3. Username matching, CLOSED skipped in code.
        self._by_username = sa.select(c.c.id, c.c.status).where(
            c.c.connection_id == sa.bindparam("k"), c.c.title == sa.bindparam("u")
        )
        # 4. STRICT CHECK and 5. FINAL CHECK.
        self._strict = sa.select(sa.func.count()).select_from(c).where(key, active)
        self._final = sa.select(c.c.id).where(key, active).limit(1)
        self._touch = (
            sa.update(c)
            .where(
                c.c.id == sa.bindparam("cid"),
                sa.or_(c.c.last_message_at.is_(None), c.c.last_message_at < sa.bindparam("at")),
            )
            .values(last_message_at=sa.bindparam("at"))
        )

    def receive(
        self,
        conn: Connection,
        *,
        chatbot_id: UUID,
        connection_id: UUID,
        psid: str,
        platform_message_id: str,
        text: str,
        username: str | None,
        now: datetime,
    ) -> None:
        """One inbound message, the seed's way: checks first, then the INSERTs.

        The webhook first resolves its connection (one SELECT, as noclash's
        ``receive_message`` does), then runs the seed's checks.
        """
        if conn.execute(self._connection, {"k": connection_id}).first() is None:
            raise LookupError("connection not found")
        if conn.execute(
            self._known_message, {"k": connection_id, "mid": platform_message_id}
        ).first():
            return
        params: dict[str, Any] = {"k": connection_id, "p": psid}
        conversation_id = conn.execute(self._initial, params).scalar()
        if conversation_id is None:
            rows = conn.execute(self._by_psid, params).all()
            conversation_id = next((r.id for r in rows if r.status != "CLOSED"), None)
        if conversation_id is None and username:
            rows = conn.execute(self._by_username, {"k": connection_id, "u": username}).all()
            conversation_id = next((r.id for r in rows if r.status != "CLOSED"), None)
        if conversation_id is None:
            if conn.execute(self._strict, params).scalar_one():
                conversation_id = conn.execute(self._final, params).scalar()
            else:
                conversation_id = conn.execute(self._final, params).scalar()
                if conversation_id is None:
                    conversation_id = uuid7()
                    conn.execute(
                        sa.insert(self.conversations).values(
                            id=conversation_id,
                            chatbot_id=chatbot_id,
                            connection_id=connection_id,
                            psid=psid,
                            status="OPEN",
                            title=username,
                            slug=f"{slugify(username or text) or 'conversation'}-"
                            f"{uuid.uuid4().hex[:8]}",
                            created_at=now,
                        )
                    )
        conn.execute(
            sa.insert(self.messages).values(
                id=uuid7(),
                conversation_id=conversation_id,
                connection_id=connection_id,
                platform_message_id=platform_message_id,
                direction="in",
                text=text,
                sent_at=now,
                created_at=now,
            )
        )
        conn.execute(self._touch, {"cid": conversation_id, "at": now})
