"""Creating conversations: the active-conversation claim and the slug, decided by the database.

A conversation has two unique keys that a create can hit:

- ``uq_conversations_active_connection_id_psid``: at most one OPEN or SNOOZED conversation
  per (connection, psid), a partial unique index, so any number of CLOSED ones may exist
  (a plain unique constraint on (connection, psid) would forbid a customer's second
  conversation; none at all would let two concurrent first messages each create one);
- ``uq_conversations_active_unconnected_chatbot_id_psid``: the same rule, per (chatbot,
  psid), for conversations with a psid and no connection (created through the API, or
  left behind by a deleted connection);
- ``(chatbot_id, slug)`` in ``conversations`` for current slugs, and the primary key of
  ``conversation_slugs``, the registry of every slug ever given, so a former slug keeps
  redirecting and is never handed to another conversation.

Each attempt is one row of an ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, and one
statement holds two: the plain slug, then a suffixed candidate with the same id, stored
only if the first row was not (:func:`noclash.chat.sql.base.two_attempts`). On PostgreSQL
the registry row goes in the same statement (a data-modifying CTE; on SQLite, which has no
DML in a CTE, the schema's triggers write it), so a create costs one statement whether or
not its title is taken. No row back means a key is taken: the active winner is read by the partial
index, or else the slugs were taken and the next candidates are tried. No SELECT decides
anything before the INSERT.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cache
from itertools import islice
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.chat import events
from noclash.chat.chatbots import get_chatbot
from noclash.chat.errors import Conflict, NotFound
from noclash.chat.sql import sql_for
from noclash.chat.sql.base import ACTIVE_KEY_WHERE, active_conversation_query
from noclash.db.dialects import dialect_for
from noclash.db.tables import ACTIVE_STATUSES, Status, chatbots, conversation_slugs, conversations
from noclash.db.types import utcnow
from noclash.unique import UniqueViolation, translating, uuid7
from noclash.unique.ids import parse_uuid
from noclash.unique.slugs import slug_candidates, slugify

Row = sa.Row[Any]

DEFAULT_SLUG_BASE = "conversation"
# Candidates tried before giving up; with suffix growth, reaching it is practically impossible.
MAX_SLUG_ATTEMPTS = 40
CURRENT_SLUG_KEY = "uq_conversations_chatbot_id_slug"
ACTIVE_KEY = "uq_conversations_active_connection_id_psid"
UNCONNECTED_ACTIVE_KEY = "uq_conversations_active_unconnected_chatbot_id_psid"


def no_free_slug(constraint: str) -> UniqueViolation:
    """Every candidate was taken (practically impossible with growing suffixes): a 409 on
    the slug, naming the key that refused the last one."""
    return UniqueViolation(
        f"no free slug after {MAX_SLUG_ATTEMPTS} candidates",
        table="conversations",
        columns=("slug",),
        constraint=constraint,
    )


def slug_base(title: str | None, slug_source: str | None = None) -> str:
    """The slug base: from the title, else from the first message, else a generic word."""
    return slugify(title) or slugify(slug_source) or DEFAULT_SLUG_BASE


@cache
def _register_statement(insert: Any) -> Any:
    return (
        insert(conversation_slugs)
        .on_conflict_do_nothing()
        .returning(conversation_slugs.c.conversation_id)
    )


def claim_attempt(conn: Connection, values: dict[str, Any]) -> tuple[Row | None, bool]:
    """One statement: ``(row, slug_registered)``, or ``(None, False)`` when a key is taken.

    ``values`` holds every inserted column and ``fallback_slug``, the candidate tried in
    the same statement when ``slug`` is taken (see
    :func:`noclash.chat.sql.base.two_attempts`). The registry row goes in the same
    statement: in a CTE on PostgreSQL, by the schema's triggers on SQLite (migration
    0002), where a former slug makes the row be skipped like a taken one, so a stored row
    is always registered there.
    """
    return sql_for(conn).claim(conn, values)


def _register(
    conn: Connection, chatbot_id: UUID, slug: str, conversation_id: UUID, now: datetime
) -> bool:
    """Claim ``slug`` in the registry for ``conversation_id``; False if it belongs to another."""
    values = {
        "chatbot_id": chatbot_id,
        "slug": slug,
        "conversation_id": conversation_id,
        "created_at": now,
    }
    if conn.execute(_register_statement(dialect_for(conn).insert), values).first() is not None:
        return True
    owner = conn.execute(
        sa.select(conversation_slugs.c.conversation_id).where(
            conversation_slugs.c.chatbot_id == chatbot_id, conversation_slugs.c.slug == slug
        )
    ).scalar()
    return owner == conversation_id


def assign_slug(
    conn: Connection,
    conversation: Row,
    candidates: Iterable[str],
    *,
    now: datetime | None = None,
) -> Row:
    """Give ``conversation`` the first candidate the registry accepts; return the new row.

    Each attempt claims the candidate in ``conversation_slugs`` (one INSERT the primary
    key decides), then points the conversation at it. A candidate that is the
    conversation's own former slug is accepted again (renaming back keeps old links).
    """
    now = now or utcnow()
    for slug in islice(candidates, MAX_SLUG_ATTEMPTS):
        if slug == conversation.slug:
            return conversation
        if not _register(conn, conversation.chatbot_id, slug, conversation.id, now):
            continue
        with translating(conversations.metadata):
            return conn.execute(
                sa.update(conversations)
                .where(conversations.c.id == conversation.id)
                .values(slug=slug)
                .returning(*conversations.c)
            ).one()
    raise no_free_slug("pk_conversation_slugs")


def insert_conversation(
    conn: Connection,
    *,
    chatbot_id: UUID,
    connection_id: UUID | None = None,
    psid: str | None = None,
    title: str | None = None,
    slug_source: str | None = None,
    status: str = Status.OPEN,
    now: datetime | None = None,
    last_message_at: datetime | None = None,
) -> tuple[Row, bool]:
    """Create a conversation with a unique slug; return ``(row, created)``.

    With a ``psid`` and an active ``status`` this is a claim: if an OPEN or SNOOZED
    conversation already holds (connection, psid), or (chatbot, psid) for a conversation
    without a connection, that one is returned with ``created=False`` and nothing is
    written (the two partial unique indexes decide, in the INSERT). The slug comes from
    ``title``, else from ``slug_source`` (the first message), else ``"conversation"``; the
    plain slug is kept when free, else a random suffix is tried, growing on repeated
    collisions.
    ``last_message_at`` is stored as given (the inbound path passes its first message's
    time, saving an UPDATE). Runs in the caller's transaction.
    """
    now = now or utcnow()
    claims = psid is not None and status in ACTIVE_STATUSES
    base = slug_base(title, slug_source)
    conversation_id = uuid7()
    candidates = islice(slug_candidates(base), MAX_SLUG_ATTEMPTS)
    for slug in candidates:
        values = {
            "id": conversation_id,
            "chatbot_id": chatbot_id,
            "connection_id": connection_id,
            "psid": psid,
            "status": status,
            "title": title,
            "slug": slug,
            "created_at": now,
            "closed_at": now if status == Status.CLOSED else None,
            "last_message_at": last_message_at,
        }
        values["fallback_slug"] = next(candidates, slug)  # each statement tries two
        with translating(conversations.metadata):
            row, registered = claim_attempt(conn, values)
        if row is not None:
            if not registered:
                # The slug is a former slug of another conversation: move on from it.
                row = assign_slug(conn, row, slug_candidates(base, first=False), now=now)
            return row, True
        if claims and psid is not None:
            winner = find_active_of(conn, chatbot_id, connection_id, psid)
            if winner is not None:
                return winner, False
    raise no_free_slug(CURRENT_SLUG_KEY)


def create_conversation(
    conn: Connection,
    chatbot_id: UUID | str,
    *,
    owner_id: UUID,
    psid: str | None = None,
    title: str | None = None,
) -> Row:
    """Create a conversation without a connection in the caller's chatbot (the API's create).

    With a ``psid``, the customer's one active conversation is claimed
    (``uq_conversations_active_unconnected_chatbot_id_psid``): when another OPEN or SNOOZED
    one holds it, a :class:`~noclash.chat.errors.Conflict` names that conversation and
    nothing is written, as a reopen beside it would. A second conversation for the same
    customer is a decision (close the first), never a race's accident.
    """
    bot = get_chatbot(conn, chatbot_id, owner_id=owner_id)
    row, created = insert_conversation(conn, chatbot_id=bot.id, psid=psid, title=title or None)
    if not created:
        raise Conflict(
            f"conversation {row.id} is already active for this customer; close it first",
            fields=("psid",),
            conversation_id=str(row.id),
        )
    events.conversation_created(conn, row)
    return row


def count_by_status(conn: Connection, chatbot_id: UUID | str, *, owner_id: UUID) -> dict[str, int]:
    """How many of the caller's chatbot's conversations are in each status (every status
    named, zeros included)."""
    bot = get_chatbot(conn, chatbot_id, owner_id=owner_id)
    rows = conn.execute(
        sa.select(conversations.c.status, sa.func.count())
        .where(conversations.c.chatbot_id == bot.id)
        .group_by(conversations.c.status)
    )
    return {status.value: 0 for status in Status} | {status: n for status, n in rows}


def get_conversation_row(conn: Connection, conversation_id: UUID) -> Row | None:
    return conn.execute(
        sa.select(conversations).where(conversations.c.id == conversation_id)
    ).first()


# -- reading ----------------------------------------------------------------------------------


def find_active(conn: Connection, connection_id: UUID, psid: str) -> Row | None:
    """The OPEN or SNOOZED conversation of (connection, psid), if any (at most one exists)."""
    return conn.execute(active_conversation_query(connection_id, psid)).first()


def find_active_of(
    conn: Connection, chatbot_id: UUID, connection_id: UUID | None, psid: str
) -> Row | None:
    """The active conversation of this customer: of (connection, psid), or, without a
    connection, of (chatbot, psid) among the unconnected ones. At most one exists."""
    if connection_id is not None:
        return find_active(conn, connection_id, psid)
    return conn.execute(
        sa.select(conversations).where(
            conversations.c.chatbot_id == chatbot_id,
            conversations.c.psid == psid,
            conversations.c.connection_id.is_(None),
            ACTIVE_KEY_WHERE,
        )
    ).first()


def _owned(owner_id: UUID) -> sa.Select[Any]:
    return (
        sa.select(conversations)
        .join(chatbots, chatbots.c.id == conversations.c.chatbot_id)
        .where(chatbots.c.owner_id == owner_id)
    )


def get_conversation(
    conn: Connection, conversation_id: UUID | str, *, owner_id: UUID, lock: bool = False
) -> Row:
    """The caller's conversation; another user's or a malformed id is NotFound.

    ``lock=True`` also takes the row lock (``FOR UPDATE OF conversations`` on PostgreSQL),
    so a lifecycle change and a concurrent inbound message on it are serialised.
    """
    ident = conversation_id if isinstance(conversation_id, UUID) else parse_uuid(conversation_id)
    if ident is None:
        raise NotFound("conversation not found")
    query = _owned(owner_id).where(conversations.c.id == ident)
    if lock:
        query = query.with_for_update(of=conversations)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound("conversation not found")
    return row


def list_conversations(
    conn: Connection,
    *,
    owner_id: UUID,
    chatbot_id: UUID | None = None,
    status: str | None = None,
    psid: str | None = None,
    after: UUID | None = None,
    limit: int = 50,
) -> list[Row]:
    """Keyset page of the caller's conversations in creation order (ids are UUIDv7)."""
    query = _owned(owner_id)
    if chatbot_id is not None:
        query = query.where(conversations.c.chatbot_id == chatbot_id)
    if status is not None:
        query = query.where(conversations.c.status == status)
    if psid is not None:
        query = query.where(conversations.c.psid == psid)
    if after is not None:
        query = query.where(conversations.c.id > after)
    return list(conn.execute(query.order_by(conversations.c.id).limit(limit)))
