"""Events: what happened, written once, in the transaction that did it, read in one order.

A bot must hear about each customer message once, and a live client must miss nothing
across a reconnect. Both come down to three rules, each enforced here:

1. **Once.** :func:`record` inserts ``ON CONFLICT (type, subject) DO NOTHING``
   (``uq_events_type_subject``): a message is the subject of one ``message.created``
   whatever retries or races stored it, because the event is written in the message's own
   transaction and the message itself is stored once.
2. **With what it describes.** The caller passes its connection: the event commits or
   rolls back with the change. When the chatbot has a ``webhook_url``, the event's webhook
   delivery (a ``deliveries`` row, destination ``webhook``) is written in the same
   transaction, so the outbox sends it until the bot acknowledges.
3. **One order, no gap.** Ids are UUIDv7 made before commit, so two transactions can
   commit in the other order than their ids: a reader that had passed the later id would
   never see the earlier one. Readers therefore follow ``seq``, a number given *after*
   commit by :func:`sequence`, under one lock (:meth:`~noclash.db.dialects.base.Dialect.
   lock_for_sequencing`): a sequencer numbers only committed rows, and the next one can
   only number rows after them. The numbers come from a counter that only goes up
   (``event_sequence``), not from the highest ``seq`` kept: deleting the newest events
   never hands their numbers out again. A reader that has seen ``seq = n`` has seen, or
   will never be shown, nothing below ``n``. Readers call :func:`sequence` themselves before
   reading (cheap when nothing waits), so no background process is needed for progress.

The event types are :class:`EventType`. ``delivery.failed`` is recorded for every failed
delivery, but one about a webhook delivery is never itself sent to the webhook.

Who commits also says so: :func:`collecting` gathers the chatbots whose events were
recorded, and after the commit the caller hands them to the process's
:class:`~noclash.chat.wakeups.Hub`, which wakes live readers here and in other processes.
That is latency only: readers re-read the table, and find everything there without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any, NamedTuple
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from noclash.db.dialects import Dialect, dialect_for
from noclash.db.engine import read_only
from noclash.db.prepared import Prepared
from noclash.db.tables import (
    PENDING_DELIVERY,
    WEBHOOK_DESTINATION,
    DeliveryStatus,
    chatbots,
    conversations,
    deliveries,
    event_sequence,
    events,
    messages,
)
from noclash.db.types import utcnow
from noclash.unique import uuid7
from noclash.unique.ids import uuid7_floor

Row = sa.Row[Any]

# Execution option that turns event writing off for one engine (the benchmark measures
# the same build with and without events); on by default.
EVENTS_OPTION = "noclash_events"
# Rows one sequencing transaction numbers at most.
SEQUENCE_BATCH = 1000
# Events one pruning transaction deletes at most (see prune).
PRUNE_BATCH = 1000


class EventType(StrEnum):
    MESSAGE_CREATED = "message.created"
    CONVERSATION_CREATED = "conversation.created"
    CONVERSATION_STATUS_CHANGED = "conversation.status_changed"
    DELIVERY_FAILED = "delivery.failed"


EVENT_TYPES: tuple[EventType, ...] = tuple(EventType)
# Each type's bit in ``chatbots.webhook_events``, the types its webhook is sent (NULL:
# every type). Stored values: never renumber.
TYPE_BITS: dict[EventType, int] = {
    EventType.MESSAGE_CREATED: 1,
    EventType.CONVERSATION_CREATED: 2,
    EventType.CONVERSATION_STATUS_CHANGED: 4,
    EventType.DELIVERY_FAILED: 8,
}


def webhook_mask(types: Iterable[str] | None) -> int | None:
    """``chatbots.webhook_events`` for a list of types (None: every type)."""
    if types is None:
        return None
    return sum({TYPE_BITS[EventType(t)] for t in types})


def webhook_types(mask: int | None) -> list[EventType] | None:
    """The types a ``chatbots.webhook_events`` mask names, in :data:`EVENT_TYPES` order
    (None: every type)."""
    if mask is None:
        return None
    return [t for t in EVENT_TYPES if mask & TYPE_BITS[t]]


def webhook_gets(mask: int | None, type: str) -> bool:
    """Whether a webhook with the mask ``mask`` is sent events of ``type``."""
    return mask is None or bool(mask & TYPE_BITS[EventType(type)])


def _json(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def as_data(row: Any, fields: Sequence[str]) -> dict[str, Any]:
    """JSON-ready ``fields`` of a row or mapping (UUIDs and times as text)."""
    mapping = row if isinstance(row, dict) else row._mapping
    return {f: _json(mapping[f]) for f in fields}


# Every column of a message: what a message.created event carries.
MESSAGE_FIELDS = tuple(c.name for c in messages.columns)
# What a conversation's events carry: its identity and state (not its timestamps of
# activity, which every message moves).
CONVERSATION_FIELDS = tuple(
    c.name
    for c in conversations.columns
    if c.name not in ("last_message_at", "snoozed_until", "closed_at")
)


class Recorded(set[UUID]):
    """The chatbots whose events the work under way recorded (see :func:`collecting`),
    and whether it queued a delivery (``queued``: a reply to a platform, an event for a
    webhook, one queued again): then dispatchers have work due now and are woken after
    the commit, instead of finding it at their next poll
    (:meth:`noclash.chat.wakeups.Hub.committed`)."""

    queued: bool = False


_recorded: ContextVar[Recorded | None] = ContextVar("noclash_recorded_events", default=None)


@contextmanager
def collecting() -> Iterator[Recorded]:
    """The ids of the chatbots whose events are recorded inside this block, so that whoever
    commits can wake readers after the commit, and only when there is something to read.

    Worker threads started inside the block see it too (anyio's ``to_thread`` runs them in
    a copy of the caller's context, and the set is shared). A hint, never a record: an
    event rolled back leaves its chatbot here, which costs readers one needless look.
    """
    recorded = Recorded()
    token = _recorded.set(recorded)
    try:
        yield recorded
    finally:
        _recorded.reset(token)


def enabled(conn: Connection) -> bool:
    return bool(conn.get_execution_options().get(EVENTS_OPTION, True))


class Event(NamedTuple):
    """One event to record: what happened (``type``), to what (``subject``), where."""

    type: EventType
    subject: str
    chatbot_id: UUID
    conversation_id: UUID | None
    data: dict[str, Any]


def record(
    conn: Connection,
    type: EventType,
    subject: str,
    *,
    chatbot_id: UUID,
    conversation_id: UUID | None,
    data: dict[str, Any],
    now: datetime | None = None,
    to_webhook: bool = True,
    webhook: bool | None = None,
) -> bool:
    """Write one event in the caller's transaction, and its webhook delivery when the
    chatbot has a webhook (see :func:`record_all`); whether it was stored. ``to_webhook=
    False`` keeps it off the webhook (a ``delivery.failed`` about a webhook delivery)."""
    event = Event(type, subject, chatbot_id, conversation_id, data)
    return record_all(conn, [event], now=now, webhook=webhook if to_webhook else False) == 1


def record_all(
    conn: Connection,
    batch: Sequence[Event],
    *,
    now: datetime | None = None,
    webhook: bool | None = None,
) -> int:
    """Write ``batch`` in the caller's transaction; how many were stored (an event whose
    ``(type, subject)`` was recorded before is not); none when events are off.

    ``webhook`` says whether the events' chatbot has a webhook, when the caller's own
    statements already read it (the inbound delivery does): False writes the events in
    one INSERT and nothing else, which is the whole cost of an event for a chatbot without
    a webhook. None (not known) or True: each event with its webhook delivery, which its
    statement writes only if the chatbot has a ``webhook_url`` when it runs (no read
    before the write); where the database takes writes in a WITH clause
    (``supports_dml_in_cte``) that is one statement per event, elsewhere two.

    The statements are built once: an event rides on every message, and building a Core
    statement costs more Python than sending it.
    """
    if not batch or not enabled(conn):
        return 0
    now = now or utcnow()
    dialect = dialect_for(conn)
    if webhook is False:
        params: dict[str, Any] = {"e_now": now}
        for n, event in enumerate(batch):
            params.update(_event_params(event, n))
        stored = _events_insert(dialect, len(batch)).on(conn).count(conn, params)
    else:
        stored = sum(_with_delivery(conn, dialect, event, now) for event in batch)
    if stored and (recorded := _recorded.get()) is not None:
        recorded.update(event.chatbot_id for event in batch)
    return stored


def _with_delivery(conn: Connection, dialect: Dialect, event: Event, now: datetime) -> int:
    """One event and, if its chatbot has a webhook, its webhook delivery; 1 if stored."""
    params = {"e_now": now, "d_id": uuid7(), "e_bit_0": TYPE_BITS[event.type],
              **_event_params(event, 0)}  # fmt: skip
    if event.conversation_id is None:  # a webhook delivery belongs to a conversation
        return _events_insert(dialect, 1).on(conn).count(conn, params)
    if dialect.supports_dml_in_cte:
        stored = conn.execute(_event_and_delivery(dialect), params).all()
        if stored and stored[0].delivery_id is not None:
            queued_delivery()
        return len(stored)
    if not _events_insert(dialect, 1).on(conn).count(conn, params):
        return 0
    if conn.execute(_webhook_delivery(), params).rowcount:
        queued_delivery()
    return 1


def queued_delivery() -> None:
    """The work under way queued a delivery, due now (see :class:`Recorded`)."""
    if (recorded := _recorded.get()) is not None:
        recorded.queued = True


def _event_params(event: Event, n: int) -> dict[str, Any]:
    """The bound parameters of the ``n``-th row of :func:`_events_insert`."""
    return {
        f"e_id_{n}": uuid7(),
        f"e_chatbot_{n}": event.chatbot_id,
        f"e_conversation_{n}": event.conversation_id,
        f"e_type_{n}": event.type.value,
        f"e_subject_{n}": event.subject,
        f"e_payload_{n}": event.data,
    }


def _p(name: str, column: sa.Column[Any]) -> Any:
    """A bound parameter typed as ``column`` (psycopg then casts it where a parameter is
    selected in ``INSERT ... SELECT``)."""
    return sa.bindparam(name, type_=column.type)


_EVENT_COLUMNS = ("id", "chatbot_id", "conversation_id", "type", "subject", "payload",
                  "created_at")  # fmt: skip


def _events_insert_statement(dialect: Dialect, rows: int) -> sa.Insert:
    """``INSERT INTO events ... SELECT <row 0> UNION ALL SELECT <row 1> ... ON CONFLICT
    (type, subject) DO NOTHING``, the ``n``-th row's parameters suffixed ``_n``: a new
    statement per call (SQLAlchemy keeps what a compiled statement exported, so one that
    was compiled cannot gain a RETURNING afterwards)."""
    c = events.c
    selects = [
        sa.select(
            _p(f"e_id_{n}", c.id),
            _p(f"e_chatbot_{n}", c.chatbot_id),
            _p(f"e_conversation_{n}", c.conversation_id),
            _p(f"e_type_{n}", c.type),
            _p(f"e_subject_{n}", c.subject),
            _p(f"e_payload_{n}", c.payload),
            _p("e_now", c.created_at),
        )
        for n in range(rows)
    ]
    source = selects[0] if rows == 1 else sa.union_all(*selects)
    return (
        dialect.insert(events)
        .from_select(_EVENT_COLUMNS, source)
        .on_conflict_do_nothing(index_elements=["type", "subject"])
    )


@cache
def _events_insert(dialect: Dialect, rows: int) -> Prepared:
    """:func:`_events_insert_statement`, run through the driver
    (:mod:`noclash.db.prepared`): it rides on every message, and SQLAlchemy's work per
    execution cost a fifth of it. Its row count says how many were stored: no RETURNING,
    whose rows cost more Python to fetch than the INSERT costs SQLite to run."""
    return Prepared(_events_insert_statement(dialect, rows))


_DELIVERY_COLUMNS = ("id", "event_id", "destination", "conversation_id", "status", "attempts",
                     "next_attempt_at", "created_at", "updated_at")  # fmt: skip


def _delivery_values(event_id: Any) -> list[Any]:
    """The webhook delivery's columns for the event ``event_id``, as SELECT items."""
    d = deliveries.c
    now = _p("e_now", d.created_at)
    return [
        _p("d_id", d.id),
        event_id,
        sa.literal(WEBHOOK_DESTINATION, type_=d.destination.type),
        _p("e_conversation_0", d.conversation_id),
        sa.literal(DeliveryStatus.QUEUED.value, type_=d.status.type),
        sa.literal(0, type_=d.attempts.type),
        now,
        now,
        now,
    ]


# The chatbot has a webhook, and it is sent events of this type (``e_bit_0``, its bit).
_HAS_WEBHOOK = sa.and_(
    chatbots.c.id == _p("e_chatbot_0", chatbots.c.id),
    chatbots.c.webhook_url.is_not(None),
    sa.or_(
        chatbots.c.webhook_events.is_(None),
        chatbots.c.webhook_events.op("&")(sa.bindparam("e_bit_0", type_=sa.Integer)) != 0,
    ),
)


@cache
def _webhook_delivery() -> sa.Insert:
    """``INSERT INTO deliveries ... SELECT ... FROM chatbots WHERE id = :chatbot AND
    webhook_url IS NOT NULL AND (webhook_events IS NULL OR webhook_events & :bit <> 0)``:
    the webhook's delivery, only if the chatbot has one that is sent this type, with no
    read before the write."""
    select = sa.select(*_delivery_values(_p("e_id_0", deliveries.c.event_id))).where(_HAS_WEBHOOK)
    return sa.insert(deliveries).from_select(_DELIVERY_COLUMNS, select)


@cache
def _event_and_delivery(dialect: Dialect) -> sa.Select[Any]:
    """Both in one statement: ``WITH e AS (INSERT INTO events ... RETURNING id), d AS
    (INSERT INTO deliveries ... SELECT ... FROM e JOIN chatbots ... RETURNING id) SELECT
    e.id, (SELECT id FROM d) AS delivery_id FROM e``. A conflict stores no event, so ``e``
    is empty and no delivery is written either."""
    stored = _events_insert_statement(dialect, 1).returning(events.c.id).cte("e")
    source = stored.join(chatbots, sa.true())
    delivery = (
        sa.insert(deliveries)
        .from_select(
            _DELIVERY_COLUMNS,
            sa.select(*_delivery_values(stored.c.id)).select_from(source).where(_HAS_WEBHOOK),
        )
        .returning(deliveries.c.id)
        .cte("d")
    )
    delivered = sa.select(delivery.c.id).scalar_subquery().label("delivery_id")
    return sa.select(stored.c.id, delivered)


# Statements that store a message or start a conversation can write its event in a CTE
# of their own (PostgreSQL): the event with no round trip of its own. Parameter prefixes
# of each kind of event (``<prefix>_id`` the event's id, ``<prefix><n>`` its n-th field).
_MESSAGE_PREFIX, _CONVERSATION_PREFIX = "em", "ec"


def _event_cte(
    insert: Any,
    name: str,
    type: EventType,
    fields: Sequence[str],
    prefix: str,
    found: dict[str, Any],
    source: Any,
) -> Any:
    """``INSERT INTO events ... SELECT ... FROM source ON CONFLICT DO NOTHING RETURNING
    id`` as the CTE ``name``: an event of ``type`` whose payload is
    ``{<type's noun>: {field: value}}``, each value a text parameter (given by
    :func:`announced_params`) but the ``found`` ones, which the statement found itself
    (expressions; ``chatbot_id`` and ``conversation_id`` are required). The subject is the
    ``id`` field, as :func:`message_event` and :func:`conversation_event` make it.
    Nothing is written when ``source`` is empty or the event exists.
    """
    e = events.c
    # JSON keys are column names, written into the statement; values are text parameters
    # with short names (psycopg caches the parsing of a statement up to 4 KiB only).
    given = {f: sa.bindparam(f"{prefix}{n}", type_=sa.String()) for n, f in enumerate(fields)}
    values = {**given, **found}
    pairs = [item for f in fields for item in (sa.literal_column(f"'{f}'"), values[f])]
    noun = type.value.split(".")[0]
    payload = sa.func.json_build_object(
        sa.literal_column(f"'{noun}'"), sa.func.json_build_object(*pairs), type_=e.payload.type
    )
    row = sa.select(
        _p(f"{prefix}_id", e.id),
        found["chatbot_id"],
        found["conversation_id"],
        sa.literal_column(f"'{type.value}'", type_=e.type.type),
        given["id"],
        payload,
        _p("e_now", e.created_at),
    ).select_from(source)
    return (
        insert(events)
        .from_select(_EVENT_COLUMNS, row)
        .on_conflict_do_nothing(index_elements=["type", "subject"])
        .returning(e.id)
        .cte(name)
    )


def message_created_cte(insert: Any, message: Any, chatbot_id: Any, source: Any = None) -> Any:
    """The ``message.created`` of the message that the CTE ``message`` (its ``id`` and
    ``conversation_id``) stores, as a CTE of the same statement; ``chatbot_id`` is an
    expression, ``source`` what to select from (default ``message``)."""
    found = {"chatbot_id": chatbot_id, "conversation_id": message.c.conversation_id}
    return _event_cte(insert, "announced", EventType.MESSAGE_CREATED, MESSAGE_FIELDS,
                      _MESSAGE_PREFIX, found, message if source is None else source)  # fmt: skip


def conversation_created_cte(insert: Any, conversation: Any, source: Any) -> Any:
    """The ``conversation.created`` of the conversation that the CTE ``conversation`` (its
    columns) stores, as a CTE of the same statement; the slug is the row's (the statement
    tried two), the rest parameters."""
    c = conversation.c
    found = {"chatbot_id": c.chatbot_id, "conversation_id": c.id, "slug": c.slug}
    return _event_cte(insert, "started", EventType.CONVERSATION_CREATED, CONVERSATION_FIELDS,
                      _CONVERSATION_PREFIX, found, source)  # fmt: skip


def announced_params(
    now: datetime,
    message: dict[str, Any] | None = None,
    conversation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters of the CTEs above for ``message`` and ``conversation`` (their
    columns; what the statement finds is not needed). The conversation's event id is made
    first, so that its event comes first."""
    params: dict[str, Any] = {"e_now": now}
    for prefix, fields, row in ((_CONVERSATION_PREFIX, CONVERSATION_FIELDS, conversation),
                                (_MESSAGE_PREFIX, MESSAGE_FIELDS, message)):  # fmt: skip
        if row is None:
            continue
        params[f"{prefix}_id"] = uuid7()
        for n, f in enumerate(fields):
            value = _json(row.get(f))
            params[f"{prefix}{n}"] = None if value is None else str(value)
    return params


def announced(
    conn: Connection,
    event_id: UUID,
    chatbot_id: UUID,
    conversation_id: UUID,
    *,
    type: EventType,
    webhook: bool,
    now: datetime,
) -> None:
    """A statement of the caller's wrote the event ``event_id`` of ``type``
    (:func:`message_created_cte`, :func:`conversation_created_cte`): write its webhook
    delivery when the chatbot has a webhook (``webhook``, which that statement read) that
    is sent this type, and wake its readers after the commit, as :func:`record_all` does."""
    if webhook:
        params = {"e_id_0": event_id, "e_chatbot_0": chatbot_id,
                  "e_conversation_0": conversation_id, "e_now": now, "d_id": uuid7(),
                  "e_bit_0": TYPE_BITS[type]}  # fmt: skip
        if conn.execute(_webhook_delivery(), params).rowcount:
            queued_delivery()
    if (recorded := _recorded.get()) is not None:
        recorded.add(chatbot_id)


# -- what the domain records --------------------------------------------------------------------


def message_event(message: Any, chatbot_id: UUID) -> Event:
    """``message.created`` for a stored message (either direction); ``message`` is a row or
    a mapping with :data:`MESSAGE_FIELDS`."""
    data = as_data(message, MESSAGE_FIELDS)
    mapping = message if isinstance(message, dict) else message._mapping
    return Event(EventType.MESSAGE_CREATED, data["id"], chatbot_id,
                 mapping["conversation_id"], {"message": data})  # fmt: skip


def conversation_event(conversation: Row) -> Event:
    """``conversation.created`` for a conversation this transaction made."""
    data = as_data(conversation, CONVERSATION_FIELDS)
    return Event(EventType.CONVERSATION_CREATED, str(conversation.id), conversation.chatbot_id,
                 conversation.id, {"conversation": data})  # fmt: skip


def message_created(conn: Connection, message: Any, chatbot_id: UUID) -> None:
    record_all(conn, [message_event(message, chatbot_id)])


def conversation_created(conn: Connection, conversation: Row) -> None:
    record_all(conn, [conversation_event(conversation)])


def status_changed(conn: Connection, conversation: Row, before: str) -> None:
    """``conversation.status_changed`` for one transition that happened in this
    transaction (the transition's conditional UPDATE makes it happen once, so its subject
    is new: the conversation and a fresh id)."""
    data = as_data(conversation, CONVERSATION_FIELDS)
    record(
        conn,
        EventType.CONVERSATION_STATUS_CHANGED,
        f"{conversation.id}:{uuid7()}",
        chatbot_id=conversation.chatbot_id,
        conversation_id=conversation.id,
        data={"conversation": data, "from": before, "to": conversation.status},
    )


def statuses_changed(conn: Connection, ids: Sequence[UUID], before: str) -> None:
    """``conversation.status_changed`` for conversations a bulk UPDATE moved."""
    if not ids or not enabled(conn):
        return
    rows = conn.execute(sa.select(conversations).where(conversations.c.id.in_(list(ids))))
    for row in rows:
        status_changed(conn, row, before)


def deliveries_failed(conn: Connection, failed: Sequence[tuple[UUID, str]]) -> None:
    """``delivery.failed`` for each ``(delivery id, attempt key)``: the attempt key makes a
    failure after a retry a new event, and a repeated write of the same outcome not."""
    if not failed or not enabled(conn):
        return
    keys = dict(failed)
    rows = conn.execute(
        sa.select(deliveries, conversations.c.chatbot_id)
        .join(conversations, conversations.c.id == deliveries.c.conversation_id)
        .where(deliveries.c.id.in_(list(keys)), deliveries.c.status == DeliveryStatus.FAILED)
    )
    for row in rows:
        data = as_data(row, ("id", "message_id", "event_id", "destination", "status",
                             "attempts", "last_error", "conversation_id"))  # fmt: skip
        record(
            conn,
            EventType.DELIVERY_FAILED,
            f"{row.id}:{keys[row.id]}",
            chatbot_id=row.chatbot_id,
            conversation_id=row.conversation_id,
            data={"delivery": data},
            to_webhook=not _about_a_webhook_delivery(data),
        )


def _about_a_webhook_delivery(delivery: dict[str, Any]) -> bool:
    """Whether a ``delivery.failed``'s delivery is a webhook's: that event is never sent
    to the webhook (it would announce its own failure, to the bot that is not answering)."""
    return delivery.get("destination") == WEBHOOK_DESTINATION


def goes_to_webhook(event: Any) -> bool:
    """Whether the chatbot's webhook gets this event (a row of ``events``): every event of
    a conversation (a webhook delivery belongs to one) but a ``delivery.failed`` about a
    webhook delivery."""
    if event.conversation_id is None:
        return False
    data = event.payload.get("delivery") if event.type == EventType.DELIVERY_FAILED else None
    return not (isinstance(data, dict) and _about_a_webhook_delivery(data))


# -- reading ------------------------------------------------------------------------------------


_UNNUMBERED = sa.select(events.c.id).where(events.c.seq.is_(None)).limit(1)
_LAST_GIVEN = sa.select(event_sequence.c.last_seq).where(event_sequence.c.one == 1)
# The highest seq held by an event (NULL when none is numbered). ``seq IS NOT NULL`` lets
# SQLite read it off the partial index ``uq_events_seq`` (a few us); without it SQLite
# scans the table (15 ms at 200,000 events). After a batch: the highest number just given
# (even if a row of the batch was deleted while it was numbered, leaving a gap).
_HIGHEST_SEQ = sa.select(sa.func.max(events.c.seq)).where(events.c.seq.is_not(None))
_HIGHEST = _HIGHEST_SEQ.scalar_subquery()
_LAST_GIVEN_AND_HIGHEST = sa.select(event_sequence.c.last_seq, _HIGHEST.label("highest")).where(
    event_sequence.c.one == 1
)
_ADVANCE = (
    sa.update(event_sequence)
    .where(event_sequence.c.one == 1)
    .values(
        last_seq=sa.case(
            (event_sequence.c.last_seq < _HIGHEST, _HIGHEST), else_=event_sequence.c.last_seq
        )
    )
)


def _last_given(conn: Connection, dialect: Dialect) -> int:
    """The last ``seq`` given: the counter's value, or the highest ``seq`` held when that
    is higher. A database whose schema was made from the metadata, not the migrations, has
    no row yet: it starts at the highest ``seq`` held, as migration 0011 starts it (``ON
    CONFLICT DO NOTHING``: whoever inserts it first wins, and both read the one row).

    Why the highest held too: during a rolling upgrade across 0011 a process of the older
    version still numbers events from ``max(seq)`` and never moves the counter; numbering
    from the counter alone would then hand out a number already held, fail on
    ``uq_events_seq`` every time, and number nothing ever again. The counter still wins
    when the newest events were deleted (the reason it exists)."""
    row = conn.execute(_LAST_GIVEN_AND_HIGHEST).first()
    if row is not None:
        return max(int(row.last_seq), int(row.highest or 0))
    highest = sa.func.coalesce(_HIGHEST, 0)
    conn.execute(
        dialect.insert(event_sequence).values(one=1, last_seq=highest).on_conflict_do_nothing()
    )
    return int(conn.execute(_LAST_GIVEN).scalar_one())


def sequence(conn: Connection, *, limit: int = SEQUENCE_BATCH) -> int:
    """Give committed events without a ``seq`` the next numbers, in id order; how many.

    Call in a transaction of its own (it takes the sequencing lock until commit). A quick
    look for unnumbered rows comes first, so a reader that finds none pays one index probe
    and no lock.

    The numbers follow the counter ``event_sequence.last_seq``, moved forward in the same
    transaction, never ``max(events.seq)``: deleting the newest events (a chatbot's
    deletion, :func:`prune`) lowers the maximum, and numbers counted from it again would
    be numbers a reader has already passed.
    """
    if conn.execute(_UNNUMBERED).first() is None:
        return 0
    dialect = dialect_for(conn)
    dialect.lock_for_sequencing(conn)
    base = _last_given(conn, dialect)
    batch = (
        sa.select(
            events.c.id,
            (
                sa.literal(base, sa.BigInteger) + sa.func.row_number().over(order_by=events.c.id)
            ).label("seq"),
        )
        .where(events.c.seq.is_(None))
        .order_by(events.c.id)
        .limit(limit)
        .subquery()
    )
    result = conn.execute(
        sa.update(events).values(seq=batch.c.seq).where(events.c.id == batch.c.id)
    )
    done = result.rowcount or 0
    if done:
        conn.execute(_ADVANCE)
    return done


def sequence_all(engine: Engine) -> int:
    """:func:`sequence` until nothing waits, each batch in its own transaction. The first
    look is on a read-only connection, so a reader that finds nothing to number takes no
    write lock (on SQLite, the database's one)."""
    with read_only(engine).connect() as conn:
        if conn.execute(_UNNUMBERED).first() is None:
            return 0
    total = 0
    while True:
        with engine.begin() as conn:
            done = sequence(conn)
        total += done
        if done < SEQUENCE_BATCH:
            return total


def prune(conn: Connection, *, before: datetime, limit: int = PRUNE_BATCH) -> int:
    """Delete up to ``limit`` events made before ``before``, oldest first; how many.

    Kept whatever their age: an event not numbered yet (a reader may be about to number
    it), and an event still on its way to a webhook (a ``queued`` or ``sending``
    delivery): nothing acknowledged is lost to a retention rule. Its webhook deliveries,
    settled, go with it (``ON DELETE CASCADE``).

    "Made before" is read from the id (UUIDv7: ``id < uuid7_floor(before)``), so the scan
    walks the primary key from the oldest event and stops at the first one too new,
    instead of reading a table that holds only newer events on every call.

    Two statements, on purpose. The first takes the batch ``FOR UPDATE SKIP LOCKED``
    where the database locks rows (PostgreSQL): dispatchers pruning at once take disjoint
    batches, and an event a retry holds (``FOR KEY SHARE``,
    :mod:`noclash.chat.event_deliveries`) is left for later. The second deletes the
    batch, checking again that none is on its way: a statement of its own reads a
    snapshot taken after the locks. In one statement, a retry that queued an event and
    committed between that statement's snapshot and its lock would go unseen (only the
    event's own row is read again after a lock wait, not its deliveries), and the
    delivery just queued would be deleted with its event.
    """
    on_its_way = sa.exists().where(
        deliveries.c.event_id == events.c.id,
        deliveries.c.status.in_(PENDING_DELIVERY),
    )
    batch = (
        sa.select(events.c.id)
        .where(events.c.id < uuid7_floor(before), events.c.seq.is_not(None), ~on_its_way)
        .order_by(events.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    taken = list(conn.scalars(batch))
    if not taken:
        return 0
    result = conn.execute(sa.delete(events).where(events.c.id.in_(taken), ~on_its_way))
    return result.rowcount or 0


def retention_horizon(days: float | None, now: datetime | None = None) -> datetime | None:
    """Before when events may have been pruned (``NOCLASH_EVENT_RETENTION_DAYS``), or None
    when every event is kept."""
    return None if days is None else (now or utcnow()) - timedelta(days=days)


def may_be_pruned(event_id: UUID, horizon: datetime | None) -> bool:
    """Whether ``event_id`` can name an event a retention rule deleted: an event id (a
    UUIDv7) made before the ``horizon`` of :func:`retention_horizon`."""
    return horizon is not None and event_id.version == 7 and event_id < uuid7_floor(horizon)


def position(conn: Connection, event_id: UUID, scope: Any = None) -> int | None:
    """The ``seq`` of ``event_id`` (None: no such event, not yet numbered, or outside
    ``scope``, a WHERE clause on events)."""
    query = sa.select(events.c.seq).where(events.c.id == event_id, events.c.seq.is_not(None))
    if scope is not None:
        query = query.where(scope)
    return conn.execute(query).scalar()


def latest(conn: Connection) -> int:
    """The highest ``seq`` of the events kept (0 when there are none): a live reader's
    start. Never above the counter :func:`sequence` numbers from, so every event numbered
    later is after it; below it when the newest events were deleted, which costs a reader
    nothing (there is nothing between to read again)."""
    return int(conn.execute(_HIGHEST_SEQ).scalar() or 0)


def read(conn: Connection, scope: Any, *, after: int, limit: int) -> list[Row]:
    """Numbered events matching ``scope`` (a WHERE clause on events) after ``seq = after``,
    in order."""
    return list(
        conn.execute(
            sa.select(events).where(scope, events.c.seq > after).order_by(events.c.seq).limit(limit)
        )
    )


# A read narrowed by type looks through at most this many events of its scope per call:
# with no index on the type (which every event's numbering would pay for), a rare type
# never makes one request scan a chatbot's whole history.
TYPE_WINDOW = 1000


class Window(NamedTuple):
    """What :func:`read_types` found: the events of the asked types, and the id of the
    last event it looked through when the window was full (None: it reached the end)."""

    rows: list[Row]
    edge: UUID | None


def read_types(
    conn: Connection,
    scope: Any,
    types: Sequence[str],
    *,
    after: int,
    limit: int,
    window: int = TYPE_WINDOW,
) -> Window:
    """Up to ``limit`` numbered events of ``types`` matching ``scope`` after ``seq =
    after``, in order, among the next ``window`` events of ``scope``. Two statements:
    the window's last event, found on the scope's own ``(…, seq)`` index, then the
    events of those types up to it."""
    edge = conn.execute(
        sa.select(events.c.seq, events.c.id)
        .where(scope, events.c.seq > after)
        .order_by(events.c.seq)
        .offset(window - 1)
        .limit(1)
    ).first()
    query = sa.select(events).where(scope, events.c.seq > after, events.c.type.in_(types))
    if edge is not None:
        query = query.where(events.c.seq <= edge.seq)
    rows = list(conn.execute(query.order_by(events.c.seq).limit(limit)))
    return Window(rows, None if edge is None else edge.id)


def of_chatbots(chatbot_ids: Sequence[UUID]) -> Any:
    return events.c.chatbot_id.in_(list(chatbot_ids))


def of_conversation(conversation_id: UUID) -> Any:
    return events.c.conversation_id == conversation_id


def owned_chatbots(owner_id: UUID) -> sa.Select[Any]:
    return sa.select(chatbots.c.id).where(chatbots.c.owner_id == owner_id)


def of_owner(owner_id: UUID) -> Any:
    """The events of every chatbot ``owner_id`` has when the query runs (a chatbot made
    after a stream opened is in it too)."""
    return events.c.chatbot_id.in_(owned_chatbots(owner_id).scalar_subquery())


# A webhook test (``POST /api/chatbots/{id}/webhook-ping``): an envelope of this type is
# sent to the webhook at once, and is not an event (not stored, not in the pull API).
PING = "ping"


def ping_envelope(chatbot_id: UUID, now: datetime | None = None) -> dict[str, Any]:
    """A ``ping`` in an event's envelope, with an id of its own (a bot that drops repeats
    by id never takes a second ping for a repeat)."""
    return {
        "id": str(uuid7()),
        "type": PING,
        "chatbot_id": str(chatbot_id),
        "conversation_id": None,
        "created_at": _json(now or utcnow()),
        "data": {},
    }


def envelope(row: Row) -> dict[str, Any]:
    """An event as every reader gets it: webhooks, streams and the pull API."""
    return {
        "id": str(row.id),
        "type": row.type,
        "chatbot_id": str(row.chatbot_id),
        "conversation_id": str(row.conversation_id) if row.conversation_id else None,
        "created_at": _json(row.created_at),
        "data": row.payload,
    }


__all__ = [
    "EVENTS_OPTION",
    "EVENT_TYPES",
    "PING",
    "TYPE_BITS",
    "TYPE_WINDOW",
    "Event",
    "EventType",
    "Recorded",
    "Window",
    "announced",
    "announced_params",
    "as_data",
    "collecting",
    "conversation_created",
    "conversation_created_cte",
    "conversation_event",
    "deliveries_failed",
    "envelope",
    "goes_to_webhook",
    "latest",
    "may_be_pruned",
    "message_created",
    "message_created_cte",
    "message_event",
    "of_chatbots",
    "of_conversation",
    "of_owner",
    "owned_chatbots",
    "ping_envelope",
    "position",
    "prune",
    "queued_delivery",
    "read",
    "read_types",
    "record",
    "record_all",
    "retention_horizon",
    "sequence",
    "sequence_all",
    "status_changed",
    "statuses_changed",
    "webhook_gets",
    "webhook_mask",
    "webhook_types",
]
