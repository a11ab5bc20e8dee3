"""An event's webhook delivery: where it stands, and sending the event to the bot again.

A bot that was down longer than its webhook's retries (``NOCLASH_WEBHOOK_MAX_ATTEMPTS``,
seven to fourteen hours) finds its events ``failed``; a bot whose webhook was set after an
event never got that event. It can read what it missed from the pull API
(``GET /api/events``), or, once it is fixed, have noclash send the events again:

- :func:`retry_event`: one event, now, with a fresh count of attempts: its failed (or
  still backing off) delivery is queued again, or, if it never had one, one is made;
- :func:`retry_failed`: every failed webhook delivery of a chatbot at once (after an
  event, optionally), in one statement.

Both only queue: the dispatcher sends, as it sends any event (:mod:`noclash.dispatch`),
with the chatbot's current URL and secret, the same ``Noclash-Event-Id`` (a bot that did
handle it drops the repeat), and in order per conversation: a delivery waits while an
older delivery of its conversation is pending, so a conversation's newer events wait for
its failed ones queued again (those sent meanwhile reached the bot before them), and a
delivery made now for an event from before the webhook, the newest, waits for the rest.
A delivery being sent right now (``sending``), or sent, is not queued again: the first is
on its way, and the second was acknowledged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from noclash.chat import events, outbox
from noclash.chat.chatbots import get_chatbot
from noclash.chat.errors import Conflict, NotFound
from noclash.db.dialects import dialect_for
from noclash.db.tables import (
    WEBHOOK_DESTINATION,
    DeliveryStatus,
    chatbots,
    conversations,
    deliveries,
)
from noclash.db.tables import events as events_table
from noclash.db.types import utcnow
from noclash.unique import uuid7
from noclash.unique.ids import parse_uuid

# What an event shows of its webhook delivery, as ``delivery_<field>`` columns.
DELIVERY_FIELDS = ("status", "attempts", "last_error", "sent_at", "next_attempt_at")
# A delivery in these states is queued again by a retry: it failed, or it waits for its
# next attempt (a retry brings that forward). ``unknown`` is a reply's state, never a
# webhook's (a bot drops a repeat, so an event is simply sent again), but it is retried
# like a failure should one be found.
RETRIED = (*outbox.RETRYABLE, DeliveryStatus.QUEUED)

_OF_WEBHOOK = sa.and_(
    deliveries.c.event_id == events_table.c.id,
    deliveries.c.destination == WEBHOOK_DESTINATION,
)


def with_delivery() -> sa.Select[Any]:
    """Events with their webhook delivery's state as ``delivery_<field>`` columns (NULL
    when the event has none)."""
    return sa.select(
        events_table, *(deliveries.c[f].label(f"delivery_{f}") for f in DELIVERY_FIELDS)
    ).outerjoin(deliveries, _OF_WEBHOOK)


def get_event(
    conn: Connection, event_id: UUID | str, *, owner_id: UUID, hold: bool = False
) -> Row:
    """One of the caller's events with its webhook delivery; another user's, or a
    malformed id, is NotFound. ``hold``: the event is kept from being pruned until the
    transaction ends (``FOR KEY SHARE`` where the database locks rows; see
    :func:`noclash.chat.events.prune`)."""
    ident = event_id if isinstance(event_id, UUID) else parse_uuid(event_id)
    row = None
    if ident is not None:
        query = with_delivery().where(
            events_table.c.id == ident,
            events_table.c.chatbot_id.in_(events.owned_chatbots(owner_id)),
        )
        if hold:
            query = query.with_for_update(of=events_table, read=True, key_share=True)
        row = conn.execute(query).first()
    if row is None:
        raise NotFound("event not found")
    return row


def retry_event(
    conn: Connection, event_id: UUID | str, *, owner_id: UUID, now: datetime | None = None
) -> Row:
    """Send one of the caller's events to its chatbot's webhook again, due now, with a
    fresh count of attempts; returns the event with its delivery.

    409 (:class:`Conflict`, naming the field) when it cannot be: the event is one the
    webhook never gets (``type``), the chatbot has no webhook (``webhook_url``), or its
    delivery is being sent or was sent (``status``).
    """
    now = now or utcnow()
    event = get_event(conn, event_id, owner_id=owner_id, hold=True)
    if not events.goes_to_webhook(event):
        raise Conflict(
            "this event is never sent to the webhook (a failure of a webhook delivery "
            "is announced in the pull API only)",
            fields=("type",),
        )
    hook = conn.execute(
        sa.select(chatbots.c.webhook_url, chatbots.c.webhook_events).where(
            chatbots.c.id == event.chatbot_id
        )
    ).first()
    if hook is None:  # the chatbot is being deleted, and the event with it
        raise NotFound("event not found")
    if hook.webhook_url is None:
        raise Conflict("the chatbot has no webhook_url to send it to", fields=("webhook_url",))
    # A delivery is made only for a type the webhook is sent; one it has is sent again.
    sent_this_type = events.webhook_gets(hook.webhook_events, event.type)
    made = sent_this_type and _made(conn, event, now)
    if not made and not _queued_again(conn, event.id, now):
        status = conn.execute(
            sa.select(deliveries.c.status).where(
                deliveries.c.event_id == event.id,
                deliveries.c.destination == WEBHOOK_DESTINATION,
            )
        ).scalar()
        if status is None and not sent_this_type:
            raise Conflict(
                f"the webhook is not sent {event.type} events (webhook_events)",
                fields=("webhook_events",),
            )
        if status is None:  # pruned with the event by a transaction that ran before
            raise NotFound("event not found")
        raise Conflict(
            f"the delivery is {status}; only a failed or queued one is sent again",
            fields=("status",),
            current_status=status,
        )
    events.queued_delivery()
    return get_event(conn, event.id, owner_id=owner_id)


def _made(conn: Connection, event: Row, now: datetime) -> bool:
    """A webhook delivery for an event that has none (the webhook came after it); False
    when it has one (``uq_deliveries_event_id_destination``: a concurrent retry's, too)."""
    values = {
        "id": uuid7(), "event_id": event.id, "destination": WEBHOOK_DESTINATION,
        "conversation_id": event.conversation_id, "status": DeliveryStatus.QUEUED,
        "attempts": 0, "next_attempt_at": now, "created_at": now, "updated_at": now,
    }  # fmt: skip
    insert = (
        dialect_for(conn)
        .insert(deliveries)
        .values(values)
        .on_conflict_do_nothing(index_elements=["event_id", "destination"])
        .returning(deliveries.c.id)
    )
    return conn.execute(insert).first() is not None


def _queued_again(conn: Connection, event_id: UUID, now: datetime) -> bool:
    """The event's webhook delivery queued again if it is in a state that may be (one
    guarded statement: a dispatcher claiming it meanwhile wins, and this says False)."""
    row = conn.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.event_id == event_id,
            deliveries.c.destination == WEBHOOK_DESTINATION,
            deliveries.c.status.in_(RETRIED),
        )
        .values(**outbox.requeued(now))
        .returning(deliveries.c.id)
    ).first()
    return row is not None


def retry_failed(
    conn: Connection,
    chatbot_id: UUID | str,
    *,
    owner_id: UUID,
    after: UUID | None = None,
    horizon: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Queue again every failed webhook delivery of the caller's chatbot (only of the
    events after the event ``after``, in the pull API's order, when given); how many.

    One statement, so it is all or nothing, and safe to repeat: a second call finds them
    queued and queues nothing more. The events must be numbered (``seq``) for ``after``
    to be placed: the caller numbers them first (:func:`noclash.chat.events.sequence_all`).
    An ``after`` the retention rule deleted (made before ``horizon``, gone) places nothing:
    every event kept came after it.
    """
    now = now or utcnow()
    chatbot = get_chatbot(conn, chatbot_id, owner_id=owner_id)
    if chatbot.webhook_url is None:
        raise Conflict("the chatbot has no webhook_url to send them to", fields=("webhook_url",))
    of_chatbot = sa.select(conversations.c.id).where(conversations.c.chatbot_id == chatbot.id)
    # The events of failed deliveries are held (FOR KEY SHARE) so that none is pruned
    # under its delivery queued again; one being pruned right now is waited for, and is
    # then not there to queue.
    failed = deliveries.alias("failed")
    of_failed = sa.and_(
        failed.c.event_id == events_table.c.id,
        failed.c.destination == WEBHOOK_DESTINATION,
        failed.c.status.in_(outbox.RETRYABLE),
    )
    held = (
        sa.select(events_table.c.id)
        .join(failed, of_failed)
        .where(events_table.c.chatbot_id == chatbot.id)
    )
    if after is not None:
        position = events.position(conn, after, events.of_chatbots([chatbot.id]))
        if position is not None:
            held = held.where(events_table.c.seq > position)
        elif not events.may_be_pruned(after, horizon):
            raise NotFound("after names no event of this chatbot")
    where = [
        deliveries.c.destination == WEBHOOK_DESTINATION,
        deliveries.c.status.in_(outbox.RETRYABLE),
        deliveries.c.conversation_id.in_(of_chatbot),
        deliveries.c.event_id.in_(
            held.with_for_update(of=events_table, read=True, key_share=True)
        ),
    ]
    queued = conn.execute(
        sa.update(deliveries).where(*where).values(**outbox.requeued(now)).returning(deliveries.c.id)
    ).all()
    if queued:
        events.queued_delivery()
    return len(queued)


__all__ = [
    "DELIVERY_FIELDS",
    "get_event",
    "retry_event",
    "retry_failed",
    "with_delivery",
]
