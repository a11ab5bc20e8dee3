"""Renaming conversations and resolving slugs, old ones included.

A rename recomputes the slug from the new title. Rules (none of them checks a candidate
with a SELECT first: that would cost a round trip per candidate and still race):

- a title with the same base as the current slug keeps the slug ("Billing" -> "billing!");
- otherwise the candidates of :func:`noclash.unique.slugs.slug_candidates` are tried in
  order: the plain base, then random suffixes that grow after repeated collisions;
- an attempt is decided by the database, never by a read: the ``UPDATE`` of
  ``conversations.slug`` is decided by ``uq_conversations_chatbot_id_slug`` (current slugs),
  then the registry row by the primary key of ``conversation_slugs`` (every slug ever
  given). The registry write is an upsert that only "updates" a row this conversation
  already owns, so renaming back to a former slug of its own takes it back, while another
  conversation's former slug is refused and the attempt is undone;
- each attempt runs in a SAVEPOINT. An ``UPDATE`` has no ``ON CONFLICT``, and on
  PostgreSQL a failed statement would abort the whole transaction; the savepoint confines
  the failure to the attempt.

Why the ``UPDATE`` comes before the registry write: creates insert the conversation row
before its registry row (:mod:`noclash.chat.conversations`), and taking the two unique
keys in the same order means a concurrent create and rename of the same slug on
PostgreSQL wait for each other instead of deadlocking.

Former slugs keep resolving: :func:`resolve_slug` returns the conversation a slug was ever
given to, and the API answers 308 to the current one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from itertools import islice
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from noclash.chat.chatbots import get_chatbot
from noclash.chat.conversations import (
    CURRENT_SLUG_KEY,
    MAX_SLUG_ATTEMPTS,
    get_conversation,
    no_free_slug,
    slug_base,
)
from noclash.chat.errors import NotFound
from noclash.db.dialects import dialect_for
from noclash.db.tables import conversation_slugs, conversations, max_length, metadata
from noclash.db.types import utcnow
from noclash.unique import translate
from noclash.unique.slugs import slug_candidates

Row = sa.Row[Any]

MAX_SLUG_LENGTH = max_length(conversations.c.slug)
_SUFFIX = r"-[a-z0-9]{4,}"


def keeps_slug(conversation: Row, base: str) -> bool:
    """Whether a rename whose slug base is ``base`` keeps the current slug.

    The slug is kept when it is ``base`` itself, when the old title had the same base (the
    slug is then ``base`` or ``base`` plus a collision suffix), or, for a conversation
    without a title (slug from its first message), when the slug is ``base`` plus a suffix.
    """
    slug = conversation.slug
    if slug == base:
        return True
    if conversation.title:
        return slug_base(conversation.title) == base
    return re.fullmatch(re.escape(base) + _SUFFIX, slug) is not None


def _try_slug(conn: Connection, conversation: Row, slug: str, title: str | None) -> Row | None:
    """One attempt: move ``conversation`` to ``slug``; None if the database says no."""
    savepoint = conn.begin_nested()
    try:
        moved = conn.execute(
            sa.update(conversations)
            .where(conversations.c.id == conversation.id)
            .values(slug=slug, title=title)
            .returning(*conversations.c)
        ).one()
    except DBAPIError as exc:
        savepoint.rollback()
        violation = translate(exc, metadata)
        if violation is None:
            raise
        if violation.constraint != CURRENT_SLUG_KEY:
            raise violation from exc
        return None
    insert = dialect_for(conn).insert(conversation_slugs)
    owned = conn.execute(
        insert.values(
            chatbot_id=conversation.chatbot_id,
            slug=slug,
            conversation_id=conversation.id,
            created_at=utcnow(),
        )
        .on_conflict_do_update(
            index_elements=["chatbot_id", "slug"],
            set_={"conversation_id": insert.excluded.conversation_id},
            # Only a row this conversation already owns is "updated" (to itself): another
            # conversation's former slug makes the statement return nothing.
            where=conversation_slugs.c.conversation_id == insert.excluded.conversation_id,
        )
        .returning(conversation_slugs.c.slug)
    ).first()
    if owned is None:
        savepoint.rollback()
        return None
    savepoint.commit()
    return moved


def move_to_slug(
    conn: Connection, conversation: Row, candidates: Iterable[str], *, title: str | None
) -> Row:
    """Give ``conversation`` the first candidate both unique keys accept; set ``title``."""
    for slug in islice(candidates, MAX_SLUG_ATTEMPTS):
        if slug == conversation.slug:
            return _set_title(conn, conversation.id, title)
        moved = _try_slug(conn, conversation, slug, title)
        if moved is not None:
            return moved
    raise no_free_slug(CURRENT_SLUG_KEY)


def _set_title(conn: Connection, conversation_id: UUID, title: str | None) -> Row:
    return conn.execute(
        sa.update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(title=title)
        .returning(*conversations.c)
    ).one()


def rename_conversation(
    conn: Connection,
    conversation_id: UUID | str,
    *,
    owner_id: UUID,
    title: str | None,
    now: datetime | None = None,
) -> Row:
    """Set the title of the caller's conversation and recompute its slug (see module doc).

    The conversation row is locked first, so two renames of one conversation queue
    instead of interleaving their attempts.
    """
    conversation = get_conversation(conn, conversation_id, owner_id=owner_id, lock=True)
    title = title or None
    base = slug_base(title)
    if keeps_slug(conversation, base):
        return _set_title(conn, conversation.id, title)
    return move_to_slug(conn, conversation, slug_candidates(base), title=title)


def resolve_slug(conn: Connection, chatbot_id: UUID | str, slug: str, *, owner_id: UUID) -> Row:
    """The caller's conversation that has or ever had ``slug`` in this chatbot.

    Compare the result's ``slug`` with the one asked for: a difference means a former slug
    (the API answers 308 to the current one). Unknown slug or chatbot: NotFound.
    """
    bot = get_chatbot(conn, chatbot_id, owner_id=owner_id)
    if not slug or len(slug) > MAX_SLUG_LENGTH:
        raise NotFound("conversation not found")
    row = conn.execute(
        sa.select(conversations)
        .join(conversation_slugs, conversation_slugs.c.conversation_id == conversations.c.id)
        .where(conversation_slugs.c.chatbot_id == bot.id, conversation_slugs.c.slug == slug)
    ).first()
    if row is None:
        raise NotFound("conversation not found")
    return row


def former_slugs(conn: Connection, conversation_id: UUID) -> list[str]:
    """Every slug the conversation had besides its current one, oldest first."""
    return list(
        conn.execute(
            sa.select(conversation_slugs.c.slug)
            .join(conversations, conversations.c.id == conversation_slugs.c.conversation_id)
            .where(
                conversation_slugs.c.conversation_id == conversation_id,
                conversation_slugs.c.slug != conversations.c.slug,
            )
            .order_by(conversation_slugs.c.created_at, conversation_slugs.c.slug)
        ).scalars()
    )


__all__ = [
    "former_slugs",
    "keeps_slug",
    "move_to_slug",
    "rename_conversation",
    "resolve_slug",
]
