"""Reading a conversation's messages and sending an agent's reply.

Inbound messages are written only by :func:`noclash.chat.inbound.receive_message`; this
module holds the outbound side and the reads. A reply to a platform customer is stored
with its delivery in one transaction (:mod:`noclash.chat.outbox`); every read carries the
delivery's state beside the message (``delivery_*`` columns, NULL where the message has
no platform delivery).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.chat import events
from noclash.chat.conversations import get_conversation, insert_conversation
from noclash.chat.errors import Conflict, InvalidInput
from noclash.chat.outbox import queue_delivery, settle_unlabelled_echo
from noclash.chat.sql import sql_for
from noclash.chat.sql.touch import touch
from noclash.db.dialects import dialect_for
from noclash.db.tables import (
    ACTIVE_STATUSES,
    DeliveryStatus,
    Direction,
    Status,
    connections,
    conversations,
    deliveries,
    messages,
)
from noclash.db.types import utcnow
from noclash.unique import ClaimNotSettled, translating, uuid7

Row = sa.Row[Any]

# The delivery's fields beside each message (one delivery per message and destination,
# and a message has one destination, so the outer join keeps one row per message).
DELIVERY_FIELDS = ("status", "attempts", "last_error", "platform_message_id", "sent_at")


def with_delivery() -> sa.Select[Any]:
    """Messages with their delivery's state as ``delivery_<field>`` columns."""
    return sa.select(
        messages, *(deliveries.c[f].label(f"delivery_{f}") for f in DELIVERY_FIELDS)
    ).outerjoin(deliveries, deliveries.c.message_id == messages.c.id)


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
    query = with_delivery().where(messages.c.conversation_id == conversation.id)
    if after is not None:
        query = query.where(messages.c.id > after)
    return list(conn.execute(query.order_by(messages.c.id).limit(limit)))


def get_message(conn: Connection, message_id: UUID) -> Row:
    """One message with its delivery (the caller has checked whose it is)."""
    return conn.execute(with_delivery().where(messages.c.id == message_id)).one()


def send_reply(
    conn: Connection,
    conversation_id: UUID | str,
    *,
    owner_id: UUID,
    text: str,
    now: datetime | None = None,
    refuse_text: Callable[[str, str], str | None] | None = None,
) -> Row:
    """Store an agent's outbound message in an active conversation; CLOSED is a 409.

    ``refuse_text(channel, text)`` says why the conversation's platform can never carry
    ``text`` (:func:`noclash.channels.sending.text_refusal`, given by the API, since chat
    knows no platform): such a reply is an :class:`InvalidInput` naming ``text`` and
    nothing is stored, rather than a message whose delivery can only fail.

    A conversation on a platform that noclash sends to gets the message's delivery in the
    same transaction (:func:`~noclash.chat.outbox.queue_delivery`); a dispatcher sends it.

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
    connection = (
        conn.execute(
            sa.select(connections).where(connections.c.id == conversation.connection_id)
        ).first()
        if conversation.connection_id is not None
        else None
    )
    if connection is not None and refuse_text is not None:
        why = refuse_text(connection.channel, text)
        if why is not None:
            raise InvalidInput(why, field="text")
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
        delivery = queue_delivery(conn, row, connection, conversation.psid, now)
    if not sql_for(conn).messages_move_conversations:
        touch(conn, conversation.id, now, reopen_snoozed=False)
    events.message_created(conn, row, conversation.chatbot_id)
    if delivery is not None and delivery.status == DeliveryStatus.FAILED:
        events.deliveries_failed(conn, [(delivery.id, "queued")])
    return get_message(conn, row.id)


# Looks for the customer's active conversation under its lock before giving up (each
# failed look means an agent closed it meanwhile).
PAGE_MESSAGE_ATTEMPTS = 5


def record_page_message(
    conn: Connection,
    connection: Row,
    *,
    psid: str,
    platform_message_id: str,
    text: str,
    sent_at: datetime | None = None,
    now: datetime | None = None,
) -> UUID | None:
    """Store a message a person sent to ``psid`` from the platform's own inbox (a Meta
    Page inbox echo), once, as an outgoing message of the customer's active conversation
    (started if there is none). Returns the new message's id, None when it was stored
    before (a redelivered echo): ``(connection_id, platform_message_id)`` decides; None
    too when it is the echo of one of noclash's own replies that came back without its
    metadata (:func:`~noclash.chat.outbox.settle_unlabelled_echo` settles that reply).

    It needs no delivery: the platform has already delivered it.
    """
    now = now or utcnow()
    known = sa.select(messages.c.id).where(
        messages.c.connection_id == connection.id,
        messages.c.platform_message_id == platform_message_id,
    )
    if conn.execute(known).first() is not None:
        return None
    # An echo of noclash's own send whose metadata did not come back (Instagram) is
    # not a Page inbox message: it settles that send and stores nothing.
    if settle_unlabelled_echo(
        conn, connection, psid=psid, mid=platform_message_id, text=text, now=now
    ):
        return None
    for _ in range(PAGE_MESSAGE_ATTEMPTS):
        conversation, created = insert_conversation(
            conn,
            chatbot_id=connection.chatbot_id,
            connection_id=connection.id,
            psid=psid,
            slug_source=text,
            now=now,
        )
        # The conversation's lock first, as every reply takes it (see send_reply); then
        # its status again, under the lock: an agent's close may have landed between the
        # read and the lock, and a closed conversation takes no new message (the next
        # look starts the customer's next conversation).
        status = conn.execute(
            sa.select(conversations.c.status)
            .where(conversations.c.id == conversation.id)
            .with_for_update()
        ).scalar()
        if status in ACTIVE_STATUSES:
            break
    else:
        raise ClaimNotSettled(f"the conversation of {psid} kept closing under its echo")
    at = sent_at or now
    inserted = conn.execute(
        dialect_for(conn)
        .insert(messages)
        .values(
            id=uuid7(),
            conversation_id=conversation.id,
            connection_id=connection.id,
            platform_message_id=platform_message_id,
            direction=Direction.OUT,
            text=text.replace("\x00", "\ufffd"),
            sent_at=at,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["connection_id", "platform_message_id"])
        .returning(*messages.c)
    ).first()
    if inserted is None:
        if created:  # a concurrent delivery of this echo stored it first
            conn.execute(sa.delete(conversations).where(conversations.c.id == conversation.id))
        return None
    if not sql_for(conn).messages_move_conversations:
        touch(conn, conversation.id, at, reopen_snoozed=False)
    if created:
        events.conversation_created(conn, conversation)
    events.message_created(conn, inserted, connection.chatbot_id)
    return inserted.id


__all__ = [
    "DELIVERY_FIELDS",
    "get_message",
    "list_messages",
    "record_page_message",
    "send_reply",
    "with_delivery",
]
