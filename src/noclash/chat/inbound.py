"""The one inbound path: every channel's customer message goes through :func:`receive_message`.

In one transaction, as few statements as the database allows:

1. **Deliver.** The message goes into the active conversation of (connection, psid), found
   by the partial unique index, with ``INSERT ... ON CONFLICT (connection_id,
   platform_message_id) DO NOTHING``: the unique key dedupes it. ``last_message_at``
   becomes ``max(last_message_at, sent_at)`` (an out-of-order delivery never rewinds it)
   and a SNOOZED conversation re-opens. On PostgreSQL this is **one statement**, a
   data-modifying CTE (:func:`_deliver_statement`); SQLite has no DML in a CTE, so there
   it is an ``INSERT ... SELECT`` whose trigger moves the conversation (migration 0003),
   plus one read on a miss. See *Locks* below for how concurrent deliveries into one
   conversation avoid queueing behind each other.
2. **Duplicate?** A message stored before (a redelivery, also after a close) is answered
   with ``duplicate=True`` and nothing is written: a redelivery never opens an empty
   conversation.
3. **Start.** With no active conversation, one is created *with* the message:
   :func:`noclash.chat.conversations.claim_ctes` (two slug attempts and the slug registry
   row) plus the message, again one statement on PostgreSQL. Nothing back means another
   delivery's conversation won the partial unique index
   ``uq_conversations_active_connection_id_psid``: step 1 runs again and delivers into the
   winner (or, if an agent closed it in between, misses and starts the next one). A
   message key taken by a concurrent delivery removes the conversation made only for it.

Locks (PostgreSQL). A delivery must be ordered against a close (a message never lands in
a conversation whose close committed first), but not against other deliveries:

- it takes ``FOR KEY SHARE`` on the active conversation, the lock its message's foreign key
  takes anyway. Deliveries share it; a close, snooze, reopen or reply, which lock
  ``FOR UPDATE``, waits for them, and a delivery that finds the row so locked waits and
  then re-reads it (a CLOSED row is a miss);
- a redelivery takes no lock at all: ``known`` decides first, so a redelivered webhook
  writes nothing and its commit flushes nothing;
- the touch of ``last_message_at`` needs the row's ``FOR NO KEY UPDATE`` lock. It is taken
  ``SKIP LOCKED``: when another delivery is touching the row right now, this one stores its
  message without waiting and, after its commit, runs :func:`_catch_up`, which moves
  ``last_message_at`` to the newest message stored since its own, waiting its turn then
  (usually to find that the other touch already covered it). A burst of messages for one
  customer therefore commits together instead of one lock holder at a time, and
  ``last_message_at`` still ends at the newest message. Waking a snooze cannot be
  deferred like that: a delivery that finds a SNOOZED row being touched rolls back and
  runs again *exclusively*;
- when the caller owns the transaction (``bind`` is a Connection) nothing can run after
  its commit, so the delivery runs exclusively at once;
- exclusively means: first ``FOR NO KEY UPDATE`` on the active conversation in a statement
  of its own, which may wait but holds nothing of the delivery yet, then the delivery
  pinned to that conversation, whose touch the lock guarantees. The delivery statement
  itself never waits for a row lock and never updates a row it waited for: the first
  version locked ``FOR NO KEY UPDATE`` inside the delivery statement, whose UPDATE then
  had to follow the row's newer version from the statement's older snapshot, and bursts
  into a snoozed conversation deadlocked (``tests/test_inbound_locks.py``).

The reads are shortcuts; the unique keys are the guarantees. There are no in-process
locks: any number of processes can run this concurrently.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import islice
from typing import Any, NamedTuple
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from noclash.chat.conversations import (
    ACTIVE_KEY_WHERE,
    MAX_SLUG_ATTEMPTS,
    active_conversation_query,
    assign_slug,
    claim_attempt,
    claim_ctes,
    find_active,
    slug_base,
)
from noclash.chat.errors import InvalidInput, NotFound
from noclash.db.dialects import dialect_for
from noclash.db.tables import connections, conversations, messages
from noclash.db.types import UTCDateTime, utcnow
from noclash.unique import ClaimNotSettled, translating, uuid7
from noclash.unique.slugs import slug_candidates

Row = sa.Row[Any]

# Extra rounds when the active conversation is closed between our claim and our delivery.
CLAIM_ATTEMPTS = 5
_ACTIVE = ACTIVE_KEY_WHERE
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
    if not isinstance(bind, Engine):
        return _receive(bind, *args, exclusive=True).result
    try:
        with bind.begin() as conn:
            delivered = _receive(conn, *args, exclusive=False)
    except _WakeUnderLock:
        with bind.begin() as conn:
            delivered = _receive(conn, *args, exclusive=True)
    if delivered.catch_up is not None:
        with bind.begin() as conn:
            _catch_up(conn, delivered.catch_up)
    return delivered.result


class _WakeUnderLock(Exception):
    """A SNOOZED conversation's row was being touched by another delivery: the message
    must wake it in its own transaction, so run again exclusively (see *Locks*)."""


class _CatchUp(NamedTuple):
    """The touch a delivery skipped because another one held the row (see *Locks*)."""

    conversation_id: UUID
    at: datetime
    message_id: UUID


class _Delivered(NamedTuple):
    result: InboundResult
    catch_up: _CatchUp | None = None


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
    one_statement = dialect_for(conn).supports_dml_in_cte
    deliver = _deliver_one_statement if one_statement else _deliver_two_statements
    start = _start_one_statement if one_statement else _start_two_statements
    title = username[:MAX_TITLE_LENGTH] if username else None
    candidates = _slug_attempts(title, text)
    for _ in range(MAX_SLUG_ATTEMPTS + CLAIM_ATTEMPTS):
        seen = deliver(conn, params, exclusive=exclusive)
        if seen is None:
            raise NotFound("connection not found")
        if seen.message_id is not None:
            result = InboundResult(seen.conversation_id, seen.message_id, False, False)
            if not seen.needs_touch or seen.touched_id is not None:
                return _Delivered(result)
            # Another transaction holds the row's touch lock. Not possible when exclusive
            # (this transaction holds it), unless the statement cannot tell: say so.
            if exclusive:
                raise ClaimNotSettled("the conversation's touch was skipped under its lock")
            if seen.status == "SNOOZED":
                raise _WakeUnderLock
            return _Delivered(result, _CatchUp(seen.conversation_id, params["at"], seen.message_id))
        if seen.known_id is not None:  # a redelivery, possibly after a close: store nothing
            return _Delivered(
                InboundResult(seen.known_conversation_id, seen.known_id, True, False)
            )
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
            "status": "OPEN",
            "title": title,
            "slug": slug,
            "created_at": now,
            "closed_at": None,
            "last_message_at": params["at"],
        }
        started = start(conn, values, candidates)
        if started is not None:
            return _Delivered(started)
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


# -- PostgreSQL: one statement per delivery --------------------------------------------------


def _param(name: str, column: sa.Column[Any]) -> Any:
    return sa.bindparam(name, type_=column.type)


def _message_select(conversation_id: Any) -> sa.Select[Any]:
    """The inbound message's values as a SELECT, for ``INSERT ... SELECT``."""
    c = messages.c
    return sa.select(
        _param("message_id", c.id),
        conversation_id,
        _param("connection", c.connection_id),
        _param("platform_message_id", c.platform_message_id),
        sa.literal("in", type_=c.direction.type),
        _param("text", c.text),
        _param("sent_at", c.sent_at),
        _param("received_at", c.created_at),
    )


_MESSAGE_COLUMNS = [
    "id",
    "conversation_id",
    "connection_id",
    "platform_message_id",
    "direction",
    "text",
    "sent_at",
    "created_at",
]


def _needs_touch(table: sa.Table | Any) -> sa.ColumnElement[bool]:
    """Whether a message at ``:at`` moves this conversation: a later ``last_message_at``,
    or a snooze to wake. The touch and the decision to catch up both ask this."""
    last = table.c.last_message_at
    return sa.or_(
        last.is_(None),
        last < sa.bindparam("at", type_=UTCDateTime()),
        table.c.status == sa.literal("SNOOZED"),
    )


@cache
def _deliver_statement(insert: Any, pinned: bool = False) -> Any:
    """Find the active conversation, store the message, move the conversation forward,
    and read what a miss needs, in one data-modifying CTE:

    - ``known``: the message as stored before this statement (a redelivery);
    - ``active``: the OPEN or SNOOZED conversation of (connection, psid), through the
      partial index, unless the message is known (a redelivery locks nothing), locked
      ``FOR KEY SHARE`` (see *Locks*): a close that commits meanwhile makes it miss;
    - ``stored``: ``INSERT ... SELECT`` from ``active``, ``ON CONFLICT (connection_id,
      platform_message_id) DO NOTHING``, the dedupe key deciding;
    - ``touched``: the forward-only ``last_message_at`` UPDATE (and a snooze woken), only
      for a stored message that moves the conversation, its row lock taken ``SKIP LOCKED``
      (``lockable``): nothing back while another transaction holds it;
    - the connection's chatbot, for the start of a new conversation, and none at all for
      an unknown connection.

    Nothing in it waits for a row lock (``FOR KEY SHARE`` waits only for a lifecycle
    change), so it never takes part in a deadlock, and it never updates a row it had to
    wait for: an UPDATE that follows a row's newer version from an older snapshot, in the
    statement that waited for it, could. ``pinned`` narrows ``active`` to ``:locked_id``,
    the conversation an earlier statement of the transaction locked (see
    :func:`_deliver_one_statement`).
    """
    known = (
        sa.select(messages.c.id, messages.c.conversation_id)
        .where(
            messages.c.connection_id == _param("connection", messages.c.connection_id),
            messages.c.platform_message_id
            == _param("platform_message_id", messages.c.platform_message_id),
        )
        .cte("known")
    )
    active: Any = (
        active_conversation_query(
            _param("connection", conversations.c.connection_id),
            _param("customer", conversations.c.psid),
        )
        .with_only_columns(
            conversations.c.id,
            conversations.c.status,
            _needs_touch(conversations).label("needs_touch"),
        )
        .where(~sa.exists(known.select()))
        .with_for_update(read=True, key_share=True)
    )
    if pinned:
        active = active.where(conversations.c.id == _param("locked_id", conversations.c.id))
    active = active.cte("active")
    stored = (
        insert(messages)
        .from_select(_MESSAGE_COLUMNS, _message_select(active.c.id))
        .on_conflict_do_nothing(index_elements=["connection_id", "platform_message_id"])
        .returning(messages.c.id, messages.c.conversation_id)
        .cte("stored")
    )
    lockable = (
        sa.select(conversations.c.id)
        .where(
            conversations.c.id.in_(sa.select(stored.c.conversation_id)),
            _needs_touch(conversations),
        )
        .with_for_update(key_share=True, skip_locked=True)
        .cte("lockable")
    )
    touched = (
        sa.update(conversations)
        .where(conversations.c.id.in_(sa.select(lockable.c.id)))
        .values(_touch_values(reopen_snoozed=True))
        .returning(conversations.c.id)
        .cte("touched")
    )
    return (
        sa.select(
            connections.c.chatbot_id,
            active.c.id.label("conversation_id"),
            stored.c.id.label("message_id"),
            known.c.id.label("known_id"),
            known.c.conversation_id.label("known_conversation_id"),
            active.c.status,
            active.c.needs_touch,
            touched.c.id.label("touched_id"),
        )
        .select_from(
            connections.outerjoin(active, sa.true())
            .outerjoin(stored, sa.true())
            .outerjoin(known, sa.true())
            .outerjoin(touched, sa.true())
        )
        .where(connections.c.id == _param("connection", connections.c.id))
    )


@cache
def _lock_active_statement() -> Any:
    """The active conversation ``FOR NO KEY UPDATE``, unless the message is stored
    already: a redelivery locks nothing here either."""
    stored_before = sa.exists().where(
        messages.c.connection_id == _param("connection", messages.c.connection_id),
        messages.c.platform_message_id
        == _param("platform_message_id", messages.c.platform_message_id),
    )
    return (
        active_conversation_query(
            _param("connection", conversations.c.connection_id),
            _param("customer", conversations.c.psid),
        )
        .with_only_columns(conversations.c.id)
        .where(~stored_before)
        .with_for_update(key_share=True)
    )


def _deliver_one_statement(
    conn: Connection, params: dict[str, Any], *, exclusive: bool = True
) -> Row | None:
    """The delivery statement; with ``exclusive``, first the active conversation's
    ``FOR NO KEY UPDATE`` lock in a statement of its own (it may wait, holding nothing of
    this delivery yet), then the delivery pinned to the conversation it locked, so that
    its touch cannot be skipped. With nothing locked the pinned delivery misses, and a
    conversation that became active in between makes the start fail and the next round
    lock it."""
    insert = dialect_for(conn).insert
    if exclusive:
        params["locked_id"] = conn.execute(_lock_active_statement(), params).scalar()
    with translating(messages.metadata):
        return conn.execute(_deliver_statement(insert, exclusive), params).first()


@cache
def _catch_up_statement() -> Any:
    """``last_message_at`` to the newest message stored since ``:since_id``, if still behind
    ``:at``: the touch a delivery skipped, run after its commit (see *Locks*).

    Waiting for the row lock is safe here, as this transaction holds nothing else. Once it
    has the lock, the WHERE is checked again on the row as the other touch left it: if that
    touch already covered ``:at``, nothing is written. Otherwise the messages stored since
    this delivery's own (UUIDv7 ids, so a short index range) give the new value, which
    covers every delivery that committed before this statement began, so a burst settles
    in a touch or two.
    """
    m = messages.c
    newest = (
        sa.select(sa.func.max(sa.func.coalesce(m.sent_at, m.created_at)))
        .where(
            m.conversation_id == sa.bindparam("conversation_id", type_=m.conversation_id.type),
            m.id >= sa.bindparam("since_id", type_=m.id.type),
        )
        .scalar_subquery()
    )
    at = sa.bindparam("at", type_=UTCDateTime())
    last = conversations.c.last_message_at
    return (
        sa.update(conversations)
        .where(
            conversations.c.id == sa.bindparam("conversation_id"),
            sa.or_(last.is_(None), last < at),
        )
        .values(last_message_at=sa.func.coalesce(newest, at))
    )


def _catch_up(conn: Connection, catch_up: _CatchUp) -> None:
    conn.execute(
        _catch_up_statement(),
        {"conversation_id": catch_up.conversation_id, "at": catch_up.at,
         "since_id": catch_up.message_id},
    )  # fmt: skip


@cache
def _start_statement(insert: Any) -> Any:
    """A new conversation (two slug attempts, the registry row) and its first message, in
    one statement: :func:`noclash.chat.conversations.claim_ctes` plus the message INSERT
    ... SELECT from the row it made. Nothing back: the partial unique index (or both slugs)
    said no, and no message was stored."""
    made, registered = claim_ctes(insert)
    stored = (
        insert(messages)
        .from_select(_MESSAGE_COLUMNS, _message_select(made.c.id))
        .on_conflict_do_nothing(index_elements=["connection_id", "platform_message_id"])
        .returning(messages.c.id)
        .cte("stored")
    )
    return sa.select(
        *made.c,
        registered.c.conversation_id.is_not(None).label("slug_registered"),
        stored.c.id.label("message_id"),
    ).select_from(made.outerjoin(registered, sa.true()).outerjoin(stored, sa.true()))


def _start_one_statement(
    conn: Connection, params: dict[str, Any], candidates: Iterator[str]
) -> InboundResult | None:
    params["fallback_slug"] = next(candidates, params["slug"])
    with translating(conversations.metadata):
        row = conn.execute(_start_statement(dialect_for(conn).insert), params).first()
    if row is None:
        return None
    return _started(conn, row, row.slug_registered, row.message_id, params, candidates)


# -- SQLite (no DML in a CTE): the same steps, one statement each ----------------------------


@cache
def _deliver_into_active(insert: Any) -> Any:
    """``INSERT INTO messages ... SELECT`` from the active conversation: one statement that
    finds the conversation by the partial index and stores the message deduped. SQLite's
    ``BEGIN IMMEDIATE`` already holds every other writer off, so no row lock is needed."""
    return (
        insert(messages)
        .from_select(
            _MESSAGE_COLUMNS,
            _message_select(conversations.c.id).where(
                conversations.c.connection_id
                == _param("connection", conversations.c.connection_id),
                conversations.c.psid == _param("customer", conversations.c.psid),
                _ACTIVE,
            ),
        )
        .on_conflict_do_nothing(index_elements=["connection_id", "platform_message_id"])
        .returning(messages.c.id, messages.c.conversation_id)
    )


_CONNECTION_STORED_ACTIVE = (
    sa.select(
        connections.c.chatbot_id,
        conversations.c.id.label("conversation_id"),
        sa.null().label("message_id"),
        messages.c.id.label("known_id"),
        messages.c.conversation_id.label("known_conversation_id"),
    )
    .select_from(
        connections.outerjoin(
            messages,
            sa.and_(
                messages.c.connection_id == connections.c.id,
                messages.c.platform_message_id == sa.bindparam("platform_message_id"),
            ),
        ).outerjoin(
            conversations,
            sa.and_(
                conversations.c.connection_id == connections.c.id,
                conversations.c.psid == sa.bindparam("customer"),
                _ACTIVE,
            ),
        )
    )
    .where(connections.c.id == sa.bindparam("connection"))
)


class _Seen(NamedTuple):
    """What a delivery found, as the PostgreSQL statement's row has it.

    ``needs_touch`` with no ``touched_id`` means the touch was skipped (see *Locks*);
    SQLite's trigger always touches, so it leaves both at their defaults.
    """

    chatbot_id: UUID | None
    conversation_id: UUID | None
    message_id: UUID | None
    known_id: UUID | None
    known_conversation_id: UUID | None
    status: str | None = None
    needs_touch: bool = False
    touched_id: UUID | None = None


def _deliver_two_statements(
    conn: Connection, params: dict[str, Any], *, exclusive: bool = True
) -> Any:
    """The message into the active conversation (the schema's trigger moves the
    conversation); on a miss, one read of the connection, the stored message and the
    active conversation. ``exclusive`` changes nothing: SQLite has one writer at a time."""
    with translating(messages.metadata):
        stored = conn.execute(_deliver_into_active(dialect_for(conn).insert), params).first()
    if stored is not None:
        if not dialect_for(conn).messages_move_conversations:
            touch(conn, stored.conversation_id, params["at"], reopen_snoozed=True)
        return _Seen(None, stored.conversation_id, stored.id, None, None)
    return conn.execute(_CONNECTION_STORED_ACTIVE, params).first()


def _start_two_statements(
    conn: Connection, params: dict[str, Any], candidates: Iterator[str]
) -> InboundResult | None:
    for slug in itertools.chain((params["slug"],), candidates):
        params["slug"] = slug
        params["fallback_slug"] = next(candidates, slug)
        with translating(conversations.metadata):
            row, registered = claim_attempt(conn, params)
        if row is not None:
            values = _message_values(params, row.id)
            with translating(messages.metadata):
                message_id = conn.execute(_insert_message(conn), values).scalar()
            return _started(conn, row, registered, message_id, params, candidates)
        if find_active(conn, params["connection"], params["customer"]) is not None:
            return None  # another delivery's conversation holds the key: deliver into it
    return None


def _message_values(params: dict[str, Any], conversation_id: UUID) -> dict[str, Any]:
    return {
        "id": params["message_id"],
        "conversation_id": conversation_id,
        "connection_id": params["connection"],
        "platform_message_id": params["platform_message_id"],
        "direction": "in",
        "text": params["text"],
        "sent_at": params["sent_at"],
        "created_at": params["received_at"],
    }


def _started(
    conn: Connection,
    row: Row,
    slug_registered: bool,
    message_id: UUID | None,
    params: dict[str, Any],
    candidates: Iterator[str],
) -> InboundResult:
    """Finish a conversation this delivery created with its message."""
    if message_id is None:
        # A concurrent delivery stored this message first (into its own conversation):
        # remove the empty conversation this one made and answer with the stored message.
        conn.execute(sa.delete(conversations).where(conversations.c.id == row.id))
        return _duplicate(conn, params["connection"], params["platform_message_id"])
    if not slug_registered:
        # The slug is a former slug of another conversation: move on from it.
        assign_slug(conn, row, candidates, now=params["created_at"])
    return InboundResult(row.id, message_id, False, True)


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


def _touch_values(*, reopen_snoozed: bool) -> dict[str, Any]:
    """``last_message_at`` to ``:at`` unless it is already later; a snooze woken."""
    at = sa.bindparam("at", type_=UTCDateTime())
    last = conversations.c.last_message_at
    values: dict[str, Any] = {
        "last_message_at": sa.case((sa.or_(last.is_(None), last < at), at), else_=last)
    }
    if reopen_snoozed:
        snoozed = conversations.c.status == "SNOOZED"
        values["status"] = sa.case((snoozed, sa.literal("OPEN")), else_=conversations.c.status)
        values["snoozed_until"] = sa.case((snoozed, sa.null()), else_=conversations.c.snoozed_until)
    return values


@cache
def _touch_statement(reopen_snoozed: bool) -> Any:
    return (
        sa.update(conversations)
        .where(conversations.c.id == sa.bindparam("conversation_id"))
        .values(_touch_values(reopen_snoozed=reopen_snoozed))
    )


def touch(conn: Connection, conversation_id: UUID, at: datetime, *, reopen_snoozed: bool) -> None:
    """Move ``last_message_at`` forward to ``at`` (never back); optionally wake a snooze.

    One UPDATE with a CASE, so the comparison happens in the database under the row lock
    and concurrent or out-of-order deliveries cannot rewind it.
    """
    conn.execute(_touch_statement(reopen_snoozed), {"at": at, "conversation_id": conversation_id})


__all__ = ["InboundResult", "receive_message", "touch"]
