"""The one inbound path: every channel's customer message goes through :func:`receive_message`.

In one transaction:

1. **Fast path.** The active conversation of (connection, psid) is read ``FOR UPDATE``
   through the partial index; if there is one, the message goes straight to step 3
   (three statements in all). Otherwise, if ``(connection_id, platform_message_id)`` is
   already stored, the answer is ``duplicate=True`` and nothing is written (a redelivery
   after a close does not open an empty conversation). Both reads are shortcuts; the
   guarantees are the unique keys of steps 2 and 3.
2. **Claim.** :func:`noclash.chat.conversations.insert_conversation` runs
   ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` against the partial unique index
   ``uq_conversations_active_connection_id_psid`` and reads the winner when it loses, so two
   deliveries racing for a new customer end up in the same conversation. The winner is then
   locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
   excludes other writers) and re-checked: if an agent closed it in between, the claim runs
   again and creates the next conversation, so a message never lands in a CLOSED one.
3. **Store.** The message is ``INSERT ... ON CONFLICT (connection_id, platform_message_id)
   DO NOTHING``. No row back means a concurrent delivery of the same message won: nothing
   is stored twice, and a conversation this call created only for it is removed again.
4. **Touch.** ``last_message_at`` becomes ``max(last_message_at, sent_at)``, so an
   out-of-order delivery never rewinds it, and a SNOOZED conversation is re-opened.

There are no in-process locks: any number of processes can run this concurrently, and the
database's unique keys decide every race.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from noclash.chat.conversations import active_conversation_query, insert_conversation
from noclash.chat.errors import InvalidInput, NotFound
from noclash.db.dialects import dialect_for
from noclash.db.tables import ACTIVE_STATUSES, connections, conversations, messages
from noclash.db.types import UTCDateTime, utcnow
from noclash.unique import ClaimNotSettled, translating, uuid7

Row = sa.Row[Any]

# How often the claim is retried when the claimed conversation is closed under our feet.
CLAIM_ATTEMPTS = 5
MAX_PLATFORM_ID_LENGTH = 300
MAX_PSID_LENGTH = 200
MAX_TITLE_LENGTH = 500


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
    if not psid or len(psid) > MAX_PSID_LENGTH:
        raise InvalidInput(f"psid must be 1 to {MAX_PSID_LENGTH} characters", field="psid")
    if not platform_message_id or len(platform_message_id) > MAX_PLATFORM_ID_LENGTH:
        raise InvalidInput(
            f"message id must be 1 to {MAX_PLATFORM_ID_LENGTH} characters", field="message_id"
        )
    if "\x00" in psid or "\x00" in platform_message_id:
        raise InvalidInput("ids must not contain NUL characters", field="psid")
    # A customer's text is stored whatever it holds, but PostgreSQL cannot store NUL in
    # text: replace it, so a platform never gets an error (and retries) for its message.
    text = text.replace("\x00", "\ufffd")
    username = username.replace("\x00", "\ufffd") if username else username
    if sent_at is not None and sent_at.tzinfo is None:
        raise InvalidInput("sent_at needs a timezone offset", field="sent_at")
    args = (connection_id, psid, platform_message_id, text, sent_at, username, now)
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            return _receive(conn, *args)
    return _receive(bind, *args)


def _stored(conn: Connection, connection_id: UUID, platform_message_id: str) -> Row | None:
    return conn.execute(
        sa.select(messages.c.id, messages.c.conversation_id).where(
            messages.c.connection_id == connection_id,
            messages.c.platform_message_id == platform_message_id,
        )
    ).first()


def _claim(
    conn: Connection,
    *,
    chatbot_id: UUID,
    connection_id: UUID,
    psid: str,
    title: str | None,
    slug_source: str,
    now: datetime,
    last_message_at: datetime,
) -> tuple[Row, bool]:
    """The active conversation of (connection, psid), locked; created if there is none."""
    for _ in range(CLAIM_ATTEMPTS):
        row, created = insert_conversation(
            conn,
            chatbot_id=chatbot_id,
            connection_id=connection_id,
            psid=psid,
            title=title,
            slug_source=slug_source,
            now=now,
            last_message_at=last_message_at,
        )
        if created:
            return row, True
        # Lock the winner and re-read it: on PostgreSQL (READ COMMITTED) a close that
        # committed since the claim read it is now visible, and no close can start until
        # this transaction ends.
        locked = conn.execute(
            sa.select(conversations).where(conversations.c.id == row.id).with_for_update()
        ).first()
        if locked is not None and locked.status in ACTIVE_STATUSES:
            return locked, False
    raise ClaimNotSettled(
        f"the active conversation of {psid!r} kept closing during {CLAIM_ATTEMPTS} claims"
    )


def _receive(
    conn: Connection,
    connection_id: UUID,
    psid: str,
    platform_message_id: str,
    text: str,
    sent_at: datetime | None,
    username: str | None,
    now: datetime | None,
) -> InboundResult:
    now = now or utcnow()
    # Fast path, the common case of a customer writing into an ongoing conversation:
    # lock the active conversation by the partial index. A shortcut, not the guarantee:
    # when it finds nothing, the claim below lets the unique index decide. FOR UPDATE
    # re-checks the predicate on PostgreSQL, so a close that committed meanwhile makes
    # this miss instead of returning a CLOSED row.
    active = conn.execute(active_conversation_query(connection_id, psid).with_for_update()).first()
    if active is not None:
        return _store(conn, active, False, connection_id, platform_message_id, text, sent_at, now)

    # The connection (for its chatbot) and, in the same read, whether this message is
    # already stored: a redelivery after a close must not open an empty new conversation.
    connection = _connection_and_stored(conn, connection_id, platform_message_id)
    if connection is None:
        raise NotFound("connection not found")
    if connection.message_id is not None:
        return InboundResult(connection.conversation_id, connection.message_id, True, False)

    title = username[:MAX_TITLE_LENGTH] if username else None
    conversation, created = _claim(
        conn,
        chatbot_id=connection.chatbot_id,
        connection_id=connection_id,
        psid=psid,
        title=title,
        slug_source=text,
        now=now,
        last_message_at=sent_at or now,
    )
    return _store(
        conn, conversation, created, connection_id, platform_message_id, text, sent_at, now
    )


def _store(
    conn: Connection,
    conversation: Row,
    created: bool,
    connection_id: UUID,
    platform_message_id: str,
    text: str,
    sent_at: datetime | None,
    now: datetime,
) -> InboundResult:
    """Insert the message (the unique key dedupes it) and move the conversation forward."""
    values = {
        "id": uuid7(),
        "conversation_id": conversation.id,
        "connection_id": connection_id,
        "platform_message_id": platform_message_id,
        "direction": "in",
        "text": text,
        "sent_at": sent_at,
        "created_at": now,
    }
    with translating(messages.metadata):
        message_id = conn.execute(_insert_message(conn), values).scalar()
    if message_id is None:
        # The same message is already stored (a redelivery, or a concurrent delivery).
        if created:
            conn.execute(sa.delete(conversations).where(conversations.c.id == conversation.id))
        known = _stored(conn, connection_id, platform_message_id)
        if known is None:  # pragma: no cover - the conflicting row cannot vanish
            raise ClaimNotSettled("a conflicting message was not readable")
        return InboundResult(known.conversation_id, known.id, True, False)

    if not created:  # a new conversation was created with this message's time already
        touch(conn, conversation.id, sent_at or now, reopen_snoozed=True)
    return InboundResult(conversation.id, message_id, False, created)


@cache
def _insert_message_for(dialect_name: str, insert: Any) -> Any:
    return (
        insert(messages)
        .on_conflict_do_nothing(index_elements=["connection_id", "platform_message_id"])
        .returning(messages.c.id)
    )


def _insert_message(conn: Connection) -> Any:
    """``INSERT ... ON CONFLICT (connection_id, platform_message_id) DO NOTHING``, built once
    per dialect; values travel as parameters."""
    dialect = dialect_for(conn)
    return _insert_message_for(dialect.name, dialect.insert)


@cache
def _touch_statement(reopen_snoozed: bool) -> Any:
    at = sa.bindparam("at", type_=UTCDateTime())
    last = conversations.c.last_message_at
    values: dict[str, Any] = {
        "last_message_at": sa.case((sa.or_(last.is_(None), last < at), at), else_=last)
    }
    if reopen_snoozed:
        snoozed = conversations.c.status == "SNOOZED"
        values["status"] = sa.case((snoozed, sa.literal("OPEN")), else_=conversations.c.status)
        values["snoozed_until"] = sa.case((snoozed, sa.null()), else_=conversations.c.snoozed_until)
    return (
        sa.update(conversations)
        .where(conversations.c.id == sa.bindparam("conversation_id"))
        .values(values)
    )


def touch(conn: Connection, conversation_id: UUID, at: datetime, *, reopen_snoozed: bool) -> None:
    """Move ``last_message_at`` forward to ``at`` (never back); optionally wake a snooze.

    One UPDATE with a CASE, so the comparison happens in the database under the row lock
    and concurrent or out-of-order deliveries cannot rewind it.
    """
    conn.execute(_touch_statement(reopen_snoozed), {"at": at, "conversation_id": conversation_id})


_CONNECTION_AND_STORED = (
    sa.select(
        connections.c.chatbot_id,
        messages.c.id.label("message_id"),
        messages.c.conversation_id,
    )
    .select_from(
        connections.outerjoin(
            messages,
            sa.and_(
                messages.c.connection_id == connections.c.id,
                messages.c.platform_message_id == sa.bindparam("platform_message_id"),
            ),
        )
    )
    .where(connections.c.id == sa.bindparam("connection_id"))
)


def _connection_and_stored(
    conn: Connection, connection_id: UUID, platform_message_id: str
) -> Row | None:
    """``(chatbot_id, message_id, conversation_id)`` of the connection; the message columns
    are NULL unless this platform message id is already stored."""
    return conn.execute(
        _CONNECTION_AND_STORED,
        {"connection_id": connection_id, "platform_message_id": platform_message_id},
    ).first()


@cache
def _active_for_update() -> Any:
    return active_conversation_query(
        sa.bindparam("connection_id"), sa.bindparam("psid")
    ).with_for_update()


__all__ = ["InboundResult", "receive_message", "touch"]
