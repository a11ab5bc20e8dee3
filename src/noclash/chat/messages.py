"""Reading a conversation's messages and sending an agent's reply.

Inbound messages are written only by :func:`noclash.chat.inbound.receive_message`; this
module holds the outbound side and the reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.chat.conversations import get_conversation
from noclash.chat.errors import Conflict
from noclash.chat.sql import sql_for
from noclash.chat.sql.touch import touch
from noclash.db.tables import Direction, Status, messages
from noclash.db.types import utcnow
from noclash.unique import translating, uuid7

Row = sa.Row[Any]


def list_messages(
    conn: Connection,
    conversation_id: UUID | str,
    *,
    owner_id: UUID,
    after: UUID | None = None,
    limit: int = 50,
) -> list[Row]:
    """Keyset page of a conversation's messages in arrival order (ids are UUIDv7)."""
    conversation = get_conversation(conn, conversation_id, owner_id=owner_id)
    query = sa.select(messages).where(messages.c.conversation_id == conversation.id)
    if after is not None:
        query = query.where(messages.c.id > after)
    return list(conn.execute(query.order_by(messages.c.id).limit(limit)))


def send_reply(
    conn: Connection,
    conversation_id: UUID | str,
    *,
    owner_id: UUID,
    text: str,
    now: datetime | None = None,
) -> Row:
    """Store an agent's outbound message in an active conversation; CLOSED is a 409.

    The conversation row is locked first, so a reply and a concurrent close are ordered:
    a reply never lands in a conversation that a committed close has already ended.
    Outbound messages have no platform id (NULL is outside the dedupe key), and they move
    ``last_message_at`` forward like inbound ones but do not wake a snooze (the touch rule,
    :mod:`noclash.chat.sql.touch`: a trigger on SQLite, this UPDATE on PostgreSQL).
    """
    now = now or utcnow()
    conversation = get_conversation(conn, conversation_id, owner_id=owner_id, lock=True)
    if conversation.status == Status.CLOSED:
        raise Conflict(
            "the conversation is closed; reopen it to reply",
            fields=("status",),
            conversation_id=str(conversation.id),
            current_status=conversation.status,
        )
    with translating(messages.metadata):
        row = conn.execute(
            sa.insert(messages)
            .values(
                id=uuid7(),
                conversation_id=conversation.id,
                connection_id=conversation.connection_id,
                platform_message_id=None,
                direction=Direction.OUT,
                text=text,
                sent_at=now,
                created_at=now,
            )
            .returning(*messages.c)
        ).one()
    if not sql_for(conn).messages_move_conversations:
        touch(conn, conversation.id, now, reopen_snoozed=False)
    return row


__all__ = ["list_messages", "send_reply"]
