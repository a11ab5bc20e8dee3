"""The one inbound path: every channel's customer message goes through :func:`receive_message`.

One algorithm, in order; the statements of each step are the engine's
(:func:`noclash.chat.sql.sql_for`: one data-modifying CTE per step on PostgreSQL, a
statement or two and the schema's triggers on SQLite):

1. **Validate.** Ids too long for their columns, NUL in an id or a naive ``sent_at`` are
   InvalidInput, and nothing is stored.
2. **Deliver.** The message goes into the active conversation of (connection, psid), found
   by the partial unique index, with ``INSERT ... ON CONFLICT (connection_id,
   platform_message_id) DO NOTHING``: the unique key dedupes it. The conversation moves
   forward by the touch rule (:mod:`noclash.chat.sql.touch`). A message stored before (a
   redelivery, also after a close) is answered with ``duplicate=True`` and nothing is
   written: a redelivery never opens an empty conversation.
3. **Start.** With no active conversation, one is created *with* the message (two slug
   attempts, the slug registry row and the message). Nothing back means another
   delivery's conversation won the partial unique index
   ``uq_conversations_active_connection_id_psid``, or the slugs were taken.
4. **Retry.** Then step 2 runs again and delivers into the winner (or, if an agent closed
   it in between, misses and starts the next one), a bounded number of times. A message
   key taken by a concurrent delivery removes the conversation made only for it.

Locks. On PostgreSQL a delivery shares the conversation's row with other deliveries and
takes the touch of ``last_message_at`` only if no other delivery holds it right now
(``SKIP LOCKED``, see :mod:`noclash.chat.sql.postgresql`), so a burst for one customer
commits together. A skipped touch is caught up here, after the delivery's commit, moving
``last_message_at`` to the newest message stored since (:func:`~noclash.chat.sql.touch.catch_up`).
Waking a snooze cannot be deferred like that: a delivery that finds a SNOOZED row being
touched rolls back and runs again *exclusively*, its touch guaranteed by the row lock.
When the caller owns the transaction (``bind`` is a Connection) nothing can run after its
commit, so the delivery runs exclusively at once. Every path takes the conversation's
touch lock before its message's unique key, so a delivery never waits for a row lock
while another waits for its key (*Lock order* in :mod:`noclash.chat.sql.postgresql`).
SQLite's trigger never skips a touch.

The reads are shortcuts; the unique keys are the guarantees. There are no in-process
locks: any number of processes can run this concurrently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, NamedTuple
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from noclash.chat import events
from noclash.chat.conversations import MAX_SLUG_ATTEMPTS, assign_slug, slug_base
from noclash.chat.errors import InvalidInput, NotFound
from noclash.chat.events import EventType
from noclash.chat.sql import sql_for
from noclash.chat.sql.base import Started, inbound_message
from noclash.chat.sql.touch import catch_up, touch
from noclash.db.tables import Status, conversations, max_length, messages
from noclash.db.types import utcnow
from noclash.unique import ClaimNotSettled, uuid7
from noclash.unique.slugs import slug_candidates

Row = sa.Row[Any]

# Extra rounds when the active conversation is closed between our claim and our delivery.
CLAIM_ATTEMPTS = 5
_PSID_LENGTH = max_length(conversations.c.psid)
_PLATFORM_ID_LENGTH = max_length(messages.c.platform_message_id)
_TITLE_LENGTH = max_length(conversations.c.title)

MESSAGE = EventType.MESSAGE_CREATED


@dataclass(frozen=True)
class InboundResult:
    """What :func:`receive_message` did.

    ``duplicate`` is true when this platform message id was already stored (a redelivery):
    then ``message_id`` is the stored message and nothing was written.
    ``created_conversation`` is true when this message started a new conversation.
    """

    conversation_id: UUID
    message_id: UUID
    duplicate: bool
    created_conversation: bool


def receive_message(
    bind: Engine | Connection,
    *,
    connection_id: UUID,
    psid: str,
    platform_message_id: str,
    text: str,
    sent_at: datetime | None = None,
    username: str | None = None,
    now: datetime | None = None,
) -> InboundResult:
    """Store one inbound customer message; safe to call any number of times concurrently.

    ``bind`` is an engine (this call owns one transaction) or a connection inside the
    caller's transaction (the widget and batch webhooks pass their own). ``psid`` is the
    customer's id within the connection (Meta PSID/IGSID, Telegram chat id, widget
    session); ``platform_message_id`` is the platform's message id and the dedupe key.
    ``sent_at`` (timezone-aware) is when the platform says the message was sent; it feeds
    ``last_message_at``, which only moves forward. ``username`` becomes the title of a
    conversation this message starts. An unknown ``connection_id`` raises NotFound.
    """
    check_ids(psid, platform_message_id, sent_at)
    # A customer's text is stored whatever it holds, but PostgreSQL cannot store NUL in
    # text: replace it, so a platform never gets an error (and retries) for its message.
    text = text.replace("\x00", "\ufffd")
    username = username.replace("\x00", "\ufffd") if username else username
    now = now or utcnow()
    args = (connection_id, psid, platform_message_id, text, sent_at, username, now)
    if not isinstance(bind, Engine):
        delivered = _receive(bind, *args, exclusive=True)
        _announce(bind, delivered)
        return delivered.result
    try:
        with bind.begin() as conn:
            delivered = _receive(conn, *args, exclusive=False)
            _announce(conn, delivered)
    except _WakeUnderLock:
        with bind.begin() as conn:
            delivered = _receive(conn, *args, exclusive=True)
            _announce(conn, delivered)
    if delivered.catch_up is not None:
        with bind.begin() as conn:
            catch_up(conn, *delivered.catch_up)
    return delivered.result


# The conversation of a delivery, when the delivery statement did not say enough.
_CONVERSATION = sa.select(conversations).where(
    conversations.c.id == sa.bindparam("conversation_id", type_=conversations.c.id.type)
)


def _announce(conn: Connection, delivered: _Delivered) -> None:
    """The events of a new message, in its transaction: ``conversation.created`` when it
    started one, then ``message.created``. A redelivery announces nothing.

    Where the delivery's statements wrote them (PostgreSQL), only their webhook deliveries
    are left, and only for a chatbot with a webhook. Elsewhere both go in one statement:
    the chatbot and a new conversation's row come from the delivery's own statements where
    they said them (no read then), otherwise from one read of the conversation; and when
    the delivery's statement said whether the chatbot has a webhook, no statement asks
    again."""
    result, message = delivered.result, delivered.message
    if message is None or not events.enabled(conn):
        return
    chatbot_id = delivered.chatbot_id
    if delivered.announced and chatbot_id is not None:
        for event_id, type in delivered.announced:
            events.announced(
                conn, event_id, chatbot_id, result.conversation_id,
                type=type, webhook=bool(delivered.webhook), now=message["created_at"],
            )  # fmt: skip
        _announce_wake(conn, delivered)
        return
    conversation = delivered.conversation
    if (result.created_conversation and conversation is None) or chatbot_id is None:
        conversation = conn.execute(
            _CONVERSATION, {"conversation_id": result.conversation_id}
        ).one()
        chatbot_id = conversation.chatbot_id
    batch = [events.conversation_event(conversation)] if result.created_conversation else []
    batch.append(events.message_event(message, chatbot_id))
    events.record_all(conn, batch, webhook=delivered.webhook)
    _announce_wake(conn, delivered)


def _announce_wake(conn: Connection, delivered: _Delivered) -> None:
    """``conversation.status_changed`` (SNOOZED to OPEN) after the ``message.created`` of
    a customer's message that woke its snoozed conversation: streams and bots saw the
    snooze and would otherwise never learn that it ended."""
    if delivered.woke:
        row = conn.execute(_CONVERSATION, {"conversation_id": delivered.result.conversation_id})
        events.status_changed(conn, row.one(), Status.SNOOZED)


def check_ids(psid: str, platform_message_id: str, sent_at: datetime | None = None) -> None:
    """Step 1, validate: raise InvalidInput (naming the field) for what can never be
    stored. Webhooks call it for every event of a body before storing the first, so a
    batch is never half written because of its own contents."""
    for field, value, limit in (
        ("psid", psid, _PSID_LENGTH),
        ("message_id", platform_message_id, _PLATFORM_ID_LENGTH),
    ):
        if not value or len(value) > limit:
            raise InvalidInput(f"{field} must be 1 to {limit} characters", field=field)
        if "\x00" in value:
            raise InvalidInput(f"{field} must not contain NUL characters", field=field)
    if sent_at is not None and sent_at.tzinfo is None:
        raise InvalidInput("sent_at needs a timezone offset", field="sent_at")


class _WakeUnderLock(Exception):
    """A SNOOZED conversation's row was being touched by another delivery: the message
    must wake it in its own transaction, so run again exclusively (see *Locks*)."""


class _CatchUp(NamedTuple):
    """The touch a delivery skipped because another one held the row (see *Locks*): the
    arguments of :func:`~noclash.chat.sql.touch.catch_up`."""

    conversation_id: UUID
    at: datetime
    message_id: UUID


class _Delivered(NamedTuple):
    result: InboundResult
    catch_up: _CatchUp | None = None
    # What the delivery's statements said, for its events (None: they did not say).
    chatbot_id: UUID | None = None
    conversation: Row | None = None
    webhook: bool | None = None
    # The events the delivery's statements wrote, in order, with their types (the rest
    # are written after).
    announced: tuple[tuple[UUID, EventType], ...] = ()
    # The message this delivery stored, its columns (None: it stored none).
    message: dict[str, Any] | None = None
    # The message woke its SNOOZED conversation (its touch found it snoozed).
    woke: bool = False


def _stored(conn: Connection, connection_id: UUID, platform_message_id: str) -> Row | None:
    return conn.execute(
        sa.select(messages.c.id, messages.c.conversation_id).where(
            messages.c.connection_id == connection_id,
            messages.c.platform_message_id == platform_message_id,
        )
    ).first()


def _receive(
    conn: Connection,
    connection_id: UUID,
    psid: str,
    platform_message_id: str,
    text: str,
    sent_at: datetime | None,
    username: str | None,
    now: datetime | None,
    *,
    exclusive: bool,
) -> _Delivered:
    sql = sql_for(conn)
    now = now or utcnow()
    # Parameter names that are not conversations' column names: SQLAlchemy would add an
    # execution parameter named like a column to the SET clause of the touch UPDATE.
    params: dict[str, Any] = {
        "connection": connection_id,
        "customer": psid,
        "platform_message_id": platform_message_id,
        "message_id": uuid7(),
        "text": text,
        "sent_at": sent_at,
        "received_at": now,
        "at": sent_at or now,
    }
    # A platform's display name is a label, not an input to reject: a longer one is cut to
    # the column, where rejecting it would make the platform retry the message forever.
    title = username[:_TITLE_LENGTH] if username else None
    candidates = _slug_attempts(title, text)
    for _ in range(MAX_SLUG_ATTEMPTS + CLAIM_ATTEMPTS):
        seen = sql.deliver(conn, params, exclusive=exclusive)
        if seen is None:
            raise NotFound("connection not found")
        if seen.message_id is not None:
            result = InboundResult(seen.conversation_id, seen.message_id, False, False)
            said = {"chatbot_id": seen.chatbot_id, "webhook": seen.has_webhook,
                    "announced": ((seen.event_id, MESSAGE),) if seen.event_id else (),
                    "message": inbound_message(params, seen.conversation_id),
                    "woke": seen.touched_status == Status.SNOOZED}  # fmt: skip
            if not seen.needs_touch or seen.touched_id is not None:
                return _Delivered(result, **said)
            # Another transaction holds the row's touch lock. Not possible when exclusive
            # (this transaction holds it), unless the statement cannot tell: say so.
            if exclusive:
                raise ClaimNotSettled("the conversation's touch was skipped under its lock")
            if seen.status == Status.SNOOZED:
                raise _WakeUnderLock
            catching_up = _CatchUp(seen.conversation_id, params["at"], seen.message_id)
            return _Delivered(result, catching_up, **said)
        if seen.known_id is not None:  # a redelivery, possibly after a close: store nothing
            return _Delivered(InboundResult(seen.known_conversation_id, seen.known_id, True, False))
        if seen.conversation_id is not None:
            # The conversation is active, but a concurrent delivery of this message won.
            return _Delivered(_duplicate(conn, connection_id, platform_message_id))
        # No active conversation and the message is new: start one with it. Nothing back
        # means another delivery's conversation won the partial unique index (or the slug
        # candidates were taken): deliver again, into the winner.
        slug = next(candidates, None)
        if slug is None:
            break
        values = {
            **params,
            "id": uuid7(),
            "chatbot_id": seen.chatbot_id,
            "connection_id": connection_id,
            "psid": psid,
            "status": Status.OPEN,
            "title": title,
            "slug": slug,
            "created_at": now,
            "closed_at": None,
            "last_message_at": params["at"],
        }
        started = sql.start(conn, values, candidates)
        if started is not None:
            return _started(conn, started, values, candidates)._replace(webhook=seen.has_webhook)
    raise ClaimNotSettled(
        f"no conversation for {psid!r} settled after {MAX_SLUG_ATTEMPTS} attempts"
    )


def _slug_attempts(title: str | None, text: str) -> Iterator[str]:
    """The slugs a new conversation tries, worked out only when one is started: most
    deliveries go into an existing conversation and never ask."""
    yield from islice(slug_candidates(slug_base(title, text)), MAX_SLUG_ATTEMPTS)


def _duplicate(conn: Connection, connection_id: UUID, platform_message_id: str) -> InboundResult:
    """The answer for a message a concurrent delivery stored first: its stored row."""
    known = _stored(conn, connection_id, platform_message_id)
    if known is None:  # pragma: no cover - the conflicting row cannot vanish
        raise ClaimNotSettled("a conflicting message was not readable")
    return InboundResult(known.conversation_id, known.id, True, False)


def _started(
    conn: Connection, started: Started, params: dict[str, Any], candidates: Iterator[str]
) -> _Delivered:
    """Finish a conversation this delivery created with its message."""
    row, slug_registered, message_id, announced = started
    if message_id is None:
        # A concurrent delivery stored this message first (into its own conversation):
        # remove the empty conversation this one made and answer with the stored message.
        conn.execute(sa.delete(conversations).where(conversations.c.id == row.id))
        return _Delivered(_duplicate(conn, params["connection"], params["platform_message_id"]))
    result = InboundResult(row.id, message_id, False, True)
    message = inbound_message(params, row.id)
    if not slug_registered:
        # The slug is a former slug of another conversation: move on from it (the row
        # then no longer says the conversation's slug).
        assign_slug(conn, row, candidates, now=params["created_at"])
        return _Delivered(result, message=message)
    return _Delivered(result, chatbot_id=row.chatbot_id, conversation=row, message=message,
                      announced=announced)  # fmt: skip


__all__ = ["InboundResult", "check_ids", "receive_message", "touch"]
