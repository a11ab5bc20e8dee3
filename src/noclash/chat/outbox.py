"""The outbox: a reply's delivery to its platform, written with the reply, settled once.

Why an outbox: a reply sent to the platform from the request that stores it is lost when
the process dies after the commit and before the send, and sent twice when the agent's
client retries a request whose answer was lost. Here the request only *writes*: the
message and its delivery row commit together (:func:`queue_delivery`, called by
:func:`noclash.chat.messages.send_reply`), and dispatchers (:mod:`noclash.dispatch`) send
what is due. What keeps a delivery single:

- ``uq_deliveries_message_id_destination``: one delivery per message per platform, so a
  retried reply (one message, by its Idempotency-Key) has one delivery;
- :func:`claim_due`: one statement moves due rows to ``sending`` with a fresh
  ``claimed_by`` (the claim's id) and a lease; on PostgreSQL ``FOR UPDATE SKIP LOCKED``
  lets any number of dispatchers claim disjoint rows without waiting for each other, on
  SQLite the write lock serialises the claims. A delivery waits while an older pending
  one of the same conversation *and destination* exists, so sends to one customer keep
  their order, and events reach the bot in order, without one destination holding up the
  other (a bot's
  webhook retried for hours never delays a reply to the customer, nor a platform outage
  the bot's events);
- :func:`settle`: an outcome is written only ``WHERE claimed_by = <the claim's id>``; a
  dispatcher whose lease ran out (it stalled, another took the delivery over) cannot
  overwrite what the newer claim decided.

A lease that runs out is the crash recovery: a killed dispatcher's ``sending`` rows are
due again when their ``next_attempt_at`` (the lease's end) passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.chat import events
from noclash.chat.errors import Conflict, NotFound
from noclash.db.dialects import dialect_for
from noclash.db.prepared import Prepared
from noclash.db.tables import (
    PENDING_DELIVERY,
    SENDING_CHANNELS,
    WEBHOOK_DESTINATION,
    DeliveryStatus,
    chatbots,
    connections,
    conversations,
    deliveries,
    messages,
)
from noclash.db.tables import events as events_table
from noclash.db.types import utcnow
from noclash.unique import uuid7
from noclash.unique.ids import parse_uuid

Row = sa.Row[Any]

NO_ACCESS_TOKEN = (
    "the connection has no access_token: set one with PATCH /api/connections/{id}, "
    "then retry the message"
)
CONNECTION_GONE = "the connection was deleted before the message was sent"
WEBHOOK_REMOVED = (
    "the chatbot's webhook_url was removed before the event was delivered "
    "(GET /api/events still has it)"
)
# Deliveries that noclash will not send again on its own; POST /api/messages/{id}/retry
# re-queues them.
RETRYABLE = (DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN)


def queue_delivery(
    conn: Connection, message: Row, connection: Row | None, recipient: str | None, now: datetime
) -> Row | None:
    """Write the delivery of an outgoing ``message`` (in the caller's transaction).

    None when the message has no platform to go to (the widget, a custom integration, a
    conversation without a connection). A connection without an access token still gets
    its delivery, ``failed`` with the reason: the agent sees at once that the reply did
    not go out, and a retry sends it once a token is set.
    """
    if connection is None or connection.channel not in SENDING_CHANNELS or not recipient:
        return None
    has_token = bool(connection.access_token)
    values = {
        "id": uuid7(),
        "message_id": message.id,
        "destination": connection.channel,
        "conversation_id": message.conversation_id,
        "connection_id": connection.id,
        "recipient": recipient,
        "status": DeliveryStatus.QUEUED if has_token else DeliveryStatus.FAILED,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None if has_token else NO_ACCESS_TOKEN,
        "created_at": now,
        "updated_at": now,
    }
    if has_token:
        events.queued_delivery()
    return conn.execute(sa.insert(deliveries).values(values).returning(*deliveries.c)).one()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this dispatcher may send until its lease ends, with what it needs.

    A reply to a platform carries its text, the customer and the connection's token; an
    event to the chatbot's webhook carries its envelope and the chatbot's ``webhook_url``
    and ``webhook_secret`` as they are at this claim: each attempt reads them anew, so a
    retry after a rotation is signed with the new secret and goes to the current URL.
    """

    id: UUID
    claim_token: UUID
    attempts: int
    destination: str
    recipient: str | None = None
    text: str | None = None
    access_token: str | None = None
    connection_gone: bool = False
    event: dict[str, Any] | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None

    @property
    def to_webhook(self) -> bool:
        return self.destination == WEBHOOK_DESTINATION


def _claim_update() -> sa.Update:
    """The claim, built once: due deliveries (bound: ``b_now``, ``b_limit``) move to
    ``sending`` under a new claim (``b_token``) until the lease ends (``b_lease_end``)."""
    older = deliveries.alias("older")
    # The statuses are written into the statement, not bound: only then can the database
    # use the partial index of pending deliveries (ix_deliveries_due, WHERE status IN
    # (...)), which it must prove the query's condition implies when planning. With bound
    # values SQLite scans and sorts every delivery ever made, sent ones included, on each
    # claim (52 ms instead of 4.5 ms with 24,000 sent), and a PostgreSQL generic plan
    # cannot use the index either.
    pending = [sa.literal_column(f"'{status.value}'") for status in PENDING_DELIVERY]
    now = sa.bindparam("b_now", type_=deliveries.c.next_attempt_at.type)
    waits_for_older = (
        sa.exists()
        .where(
            older.c.conversation_id == deliveries.c.conversation_id,
            older.c.destination == deliveries.c.destination,
            older.c.status.in_(pending),
            older.c.id < deliveries.c.id,
        )
        .correlate(deliveries)
    )
    # A newer one being sent right now (its lease, or its wait for an echo, still running):
    # an older delivery queued again by a retry goes after it, not beside it. (Once that
    # lease has run out, the newer one waits for the older one instead.) Read on the
    # conversation's index from this delivery's id up: nothing, for the newest.
    later = deliveries.alias("later")
    newer_in_flight = (
        sa.exists()
        .where(
            later.c.conversation_id == deliveries.c.conversation_id,
            later.c.id > deliveries.c.id,
            later.c.destination == deliveries.c.destination,
            later.c.status == sa.literal_column(f"'{DeliveryStatus.SENDING.value}'"),
            later.c.next_attempt_at > now,
        )
        .correlate(deliveries)
    )
    due = (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.status.in_(pending),
            deliveries.c.next_attempt_at <= now,
            ~waits_for_older,
            ~newer_in_flight,
        )
        .order_by(deliveries.c.next_attempt_at)
        .limit(sa.bindparam("b_limit", type_=sa.Integer))
        .with_for_update(skip_locked=True)
    )
    return (
        sa.update(deliveries)
        .where(deliveries.c.id.in_(due.scalar_subquery()))
        .values(
            status=DeliveryStatus.SENDING,
            attempts=deliveries.c.attempts + 1,
            next_attempt_at=sa.bindparam("b_lease_end", type_=deliveries.c.next_attempt_at.type),
            claimed_by=sa.bindparam("b_token", type_=deliveries.c.claimed_by.type),
            updated_at=now,
        )
    )


def _claim_statement() -> sa.Update:
    """The claim returning what a reply's send needs: its row, its text and its
    connection's token (an event's envelope is read apart: :func:`_claimed_events_statement`)."""
    return _claim_update().returning(
        deliveries.c.id,
        deliveries.c.attempts,
        deliveries.c.destination,
        deliveries.c.recipient,
        deliveries.c.event_id,
        # The connection's id itself, not ``connection_id IS NULL``: SQLite 3.40 (Debian
        # 12's, the one this project's Python links) evaluates ``IS NULL`` in RETURNING as
        # false for a NULL column of a table with a NOT NULL column before it, so a
        # reply whose connection was deleted looked connected and failed as having no
        # access token (telling the agent to PATCH a connection that no longer exists).
        deliveries.c.connection_id,
        # A reply's text and its connection's token, read by the claim itself (one
        # statement, no second read of the batch). The updated row's columns are
        # named in full: SQLite renders RETURNING's own columns unqualified, which
        # inside these subqueries would name the subquery's table.
        sa.select(messages.c.text)
        .where(messages.c.id == sa.literal_column("deliveries.message_id"))
        .scalar_subquery()
        .label("text"),
        sa.select(connections.c.access_token)
        .where(connections.c.id == sa.literal_column("deliveries.connection_id"))
        .scalar_subquery()
        .label("access_token"),
    )


def _envelope_columns() -> list[sa.ColumnElement[Any]]:
    """What an event's webhook delivery needs besides its own row, named as
    :func:`events.envelope` reads them (after the event's ``id``): the event and its
    chatbot's current URL and secret."""
    e = events_table.c
    return [
        e.type, e.chatbot_id, e.conversation_id, e.created_at, e.payload,
        chatbots.c.webhook_url, chatbots.c.webhook_secret,
    ]  # fmt: skip


def _claimed_events_statement() -> sa.Select[Any]:
    """The events of a claim's webhook deliveries, with their chatbots' current URL and
    secret: found as the claim left them (``sending`` under its token until its lease's
    end, ``b_lease_end``), so the statement has one shape for any batch and finds them
    through ``ix_deliveries_due`` (its predicate written as the claim writes it)."""
    pending = [sa.literal_column(f"'{status.value}'") for status in PENDING_DELIVERY]
    e = events_table.c
    return (
        sa.select(
            deliveries.c.id.label("delivery_id"),
            deliveries.c.attempts,
            deliveries.c.destination,
            e.id,
            *_envelope_columns(),
        )
        .select_from(
            deliveries.join(events_table, e.id == deliveries.c.event_id).join(
                chatbots, chatbots.c.id == e.chatbot_id
            )
        )
        .where(
            deliveries.c.status.in_(pending),
            deliveries.c.next_attempt_at
            == sa.bindparam("b_lease_end", type_=deliveries.c.next_attempt_at.type),
            deliveries.c.claimed_by == sa.bindparam("b_token", type_=deliveries.c.claimed_by.type),
            deliveries.c.status == sa.literal_column(f"'{DeliveryStatus.SENDING.value}'"),
        )
        .order_by(deliveries.c.id)
    )


def _claim_with_events_statement() -> sa.Select[Any]:
    """The claim and everything its sends need in one statement, where an UPDATE can be
    a common table expression (PostgreSQL): the claimed rows joined to their replies'
    texts and tokens and to their events with the chatbots' current URL and secret.

    Why one statement: a dispatcher's database work waits on the event loop that runs
    its sends, so each round trip waits for a turn of a busy loop (tens of milliseconds
    at a few hundred sends a second); a claim of events read apart took two of them.
    """
    claimed = (
        _claim_update()
        .returning(
            deliveries.c.id,
            deliveries.c.attempts,
            deliveries.c.destination,
            deliveries.c.recipient,
            deliveries.c.event_id,
            deliveries.c.message_id,
            deliveries.c.connection_id,
        )
        .cte("claimed")
    )
    c, e = claimed.c, events_table.c
    return (
        sa.select(
            c.id,
            c.attempts,
            c.destination,
            c.recipient,
            c.event_id,
            c.connection_id.is_(None).label("connection_gone"),
            messages.c.text,
            connections.c.access_token,
            *_envelope_columns(),
        )
        .select_from(
            claimed.outerjoin(messages, messages.c.id == c.message_id)
            .outerjoin(connections, connections.c.id == c.connection_id)
            .outerjoin(events_table, e.id == c.event_id)
            .outerjoin(chatbots, chatbots.c.id == e.chatbot_id)
        )
        .order_by(c.id)
    )


class _ClaimedRow(NamedTuple):
    """A row of :func:`_claim_with_events_statement` (an event's columns named as
    :func:`events.envelope` reads them; NULL for a reply)."""

    delivery_id: UUID
    attempts: int
    destination: str
    recipient: str | None
    id: UUID | None  # the event's
    connection_gone: bool
    text: str | None
    access_token: str | None
    type: str | None  # from here on, _envelope_columns()
    chatbot_id: UUID | None
    conversation_id: UUID | None
    created_at: datetime | None
    payload: Any
    webhook_url: str | None
    webhook_secret: str | None


class _ClaimedEvent(NamedTuple):
    """A row of :func:`_claimed_events_statement` (the names :func:`events.envelope` reads)."""

    delivery_id: UUID
    attempts: int
    destination: str
    id: UUID
    type: str
    chatbot_id: UUID
    conversation_id: UUID | None
    created_at: datetime
    payload: Any
    webhook_url: str | None
    webhook_secret: str | None


# Run through the driver (noclash.db.prepared): a dispatcher claims and settles many
# times a second, and SQLAlchemy's processing of each row's values cost more than the
# database's work (claim 48 to 17 us and settlement 34 to 11 us per delivery on SQLite,
# measured in docs/performance.md).
_CLAIM = Prepared(_claim_statement())
_CLAIMED_EVENTS = Prepared(_claimed_events_statement())
_CLAIM_WITH_EVENTS = Prepared(_claim_with_events_statement())


def claim_due(
    conn: Connection, *, limit: int, lease_seconds: float, now: datetime | None = None
) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries for one lease.

    In a transaction, or in autocommit (each statement its own transaction): the claim
    then commits by itself, and the read of its events finds them by the claim's token
    and lease, as the claim left them. A failure between the two leaves those deliveries
    to their lease, as a crash would.

    Due: ``queued`` or ``sending`` (a lease that ran out) with ``next_attempt_at`` passed,
    and no older pending delivery in the same conversation to the same destination. The
    claim is one statement (built once: a dispatcher claims many times a second) that also
    returns the replies' texts and tokens; on PostgreSQL it returns the events' envelopes
    and webhooks too (an UPDATE in a CTE), elsewhere they take one more read.
    """
    now = now or utcnow()
    token = uuid7()
    params = {
        "b_now": now,
        "b_limit": limit,
        "b_lease_end": now + timedelta(seconds=lease_seconds),
        "b_token": token,
    }
    if dialect_for(conn).supports_dml_in_cte:
        return [_claimed(row, token) for row in _CLAIM_WITH_EVENTS.on(conn).execute(conn, params)]
    claimed = _CLAIM.on(conn).execute(conn, params)
    replies, has_events = [], False
    for id_, attempts, destination, recipient, event_id, via, text, access_token in claimed:
        if event_id is not None:
            has_events = True
            continue
        gone = via is None
        replies.append(
            _reply_claim(token, id_, attempts, destination, recipient, gone, text, access_token)
        )
    if not has_events:
        return replies
    return [*replies, *_events(conn, token, params)]


def _reply_claim(
    token: UUID,
    id_: UUID,
    attempts: int,
    destination: str,
    recipient: str | None,
    gone: Any,
    text: str | None,
    access_token: str | None,
) -> Claimed:
    """A claimed reply to a platform, with its text and its connection's token."""
    return Claimed(
        id=id_,
        claim_token=token,
        attempts=attempts,
        destination=destination,
        recipient=recipient,
        text=text,
        access_token=access_token,
        connection_gone=bool(gone),
    )


def _event_claim(row: _ClaimedRow | _ClaimedEvent, token: UUID) -> Claimed:
    """A claimed event to its chatbot's webhook, with its envelope, URL and secret."""
    return Claimed(
        id=row.delivery_id,
        claim_token=token,
        attempts=row.attempts,
        destination=row.destination,
        event=events.envelope(row),
        webhook_url=row.webhook_url,
        webhook_secret=row.webhook_secret,
    )


def _claimed(values: tuple[Any, ...], token: UUID) -> Claimed:
    """A row of the one-statement claim as what its send needs."""
    row = _ClaimedRow(*values)
    if row.id is not None:
        return _event_claim(row, token)
    return _reply_claim(
        token, row.delivery_id, row.attempts, row.destination, row.recipient,
        row.connection_gone, row.text, row.access_token,
    )  # fmt: skip


def _events(conn: Connection, token: UUID, params: dict[str, Any]) -> list[Claimed]:
    """The claim's webhook deliveries with their events and the chatbots' current URL and
    secret: one read for the batch, of one shape whatever its size."""
    rows = _CLAIMED_EVENTS.on(conn).execute(conn, params)
    return [_event_claim(_ClaimedEvent(*row), token) for row in rows]


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of one claimed delivery.

    ``status`` ``sending`` keeps the claim (same token) until ``next_attempt_at``: the
    delivery waits for the platform's echo and is sent again only if none comes.
    """

    id: UUID
    claim_token: UUID
    status: DeliveryStatus
    next_attempt_at: datetime
    last_error: str | None = None
    platform_message_id: str | None = None
    sent_at: datetime | None = None


def _fenced() -> sa.Update:
    """An UPDATE of one claimed delivery (``b_id``) that holds only while its claim
    (``b_token``) does: the fence against a dispatcher whose lease ran out."""
    return sa.update(deliveries).where(
        deliveries.c.id == sa.bindparam("b_id"),
        deliveries.c.claimed_by == sa.bindparam("b_token"),
        deliveries.c.status == DeliveryStatus.SENDING,
    )


def _settle_statement() -> sa.Update:
    """The settlement of one claimed delivery, built once (bound: the outcome's values and
    ``b_now``)."""
    return _fenced().values(
        status=sa.bindparam("b_status", type_=deliveries.c.status.type),
        next_attempt_at=sa.bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
        last_error=sa.bindparam("b_error", type_=deliveries.c.last_error.type),
        platform_message_id=sa.func.coalesce(
            sa.bindparam("b_pmid", type_=deliveries.c.platform_message_id.type),
            deliveries.c.platform_message_id,
        ),
        sent_at=sa.bindparam("b_sent", type_=deliveries.c.sent_at.type),
        claimed_by=sa.bindparam("b_keep", type_=deliveries.c.claimed_by.type),
        updated_at=sa.bindparam("b_now", type_=deliveries.c.updated_at.type),
    )


# The outcome's fields, in the order both settlement statements bind them.
_OUTCOME = (
    ("id", deliveries.c.id),
    ("token", deliveries.c.claimed_by),
    ("status", deliveries.c.status),
    ("next", deliveries.c.next_attempt_at),
    ("error", deliveries.c.last_error),
    ("pmid", deliveries.c.platform_message_id),
    ("sent", deliveries.c.sent_at),
    ("keep", deliveries.c.claimed_by),
)


_BIND_NAMES = tuple(f"b_{name}" for name, _ in _OUTCOME)


def _settle_batch_statement() -> sa.Update:
    """The settlement of a whole batch as one statement executed once, where the database
    takes arrays (:attr:`~noclash.db.dialects.base.Dialect.supports_array_binds`): the
    outcomes go as one array per field (``b_id`` ... ``b_keep``), are unnested into rows
    and joined to their deliveries, each written only while its claim holds (the fence
    of :func:`_fenced`); the ones that held come back with their claim.

    Why: an ``executemany`` of the one-row UPDATE is one execution per row on the server
    (each with its own executor start, snapshot and index look-up); PostgreSQL spent 31 us
    of CPU per settled delivery that way, and 12.5 us this way (docs/performance.md)."""
    outcome = (
        sa.func.unnest(
            *(sa.bindparam(f"b_{name}", type_=sa.ARRAY(column.type)) for name, column in _OUTCOME)
        )
        .table_valued(*(sa.column(name, column.type) for name, column in _OUTCOME))
        .render_derived(name="outcome")
    )
    o = outcome.c
    return (
        sa.update(deliveries)
        .where(
            deliveries.c.id == o.id,
            deliveries.c.claimed_by == o.token,
            deliveries.c.status == sa.literal_column(f"'{DeliveryStatus.SENDING.value}'"),
        )
        .values(
            status=o.status,
            next_attempt_at=o.next,
            last_error=o.error,
            platform_message_id=sa.func.coalesce(o.pmid, deliveries.c.platform_message_id),
            sent_at=o.sent,
            claimed_by=o.keep,
            updated_at=sa.bindparam("b_now", type_=deliveries.c.updated_at.type),
        )
        .returning(deliveries.c.id, o.token)
    )


_SETTLE = Prepared(_settle_statement())
_SETTLE_ONE = Prepared(_settle_statement().returning(deliveries.c.id))
_SETTLE_BATCH = Prepared(_settle_batch_statement(), binary=True)


def _outcome(s: Settlement) -> tuple[Any, ...]:
    """A settlement's values in the order of :data:`_OUTCOME`. A claim is kept only by an
    outcome that waits under it (``sending``: the echo's wait)."""
    keep = s.claim_token if s.status == DeliveryStatus.SENDING else None
    pmid, sent = s.platform_message_id, s.sent_at
    if s.status == DeliveryStatus.FAILED:
        pmid = sent = None
    return (s.id, s.claim_token, s.status.value, s.next_attempt_at, s.last_error, pmid, sent, keep)


def announces(settlements: Sequence[Settlement]) -> bool:
    """Whether settling these may record events (a failure is announced by the claim
    that writes it): then the settlement and its events must commit together. Otherwise
    each statement of :func:`settle` stands alone (every outcome is fenced by its own
    claim), and may commit by itself."""
    return any(s.status == DeliveryStatus.FAILED for s in settlements)


def frees_followers(settlements: Sequence[Settlement]) -> bool:
    """Whether settling these may make a later delivery claimable: one that waited for an
    earlier delivery of its conversation and destination (sends keep their order, see
    :func:`claim_due`) waits no longer once that one is no longer pending."""
    return any(s.status not in PENDING_DELIVERY for s in settlements)


def settle(conn: Connection, settlements: Sequence[Settlement], now: datetime | None = None) -> int:
    """Write outcomes, each only if its claim still holds; returns how many did.

    An outcome for a delivery that an echo already settled (``sent``) or another
    dispatcher took over is dropped: the ``WHERE`` guards it. A failure that held is
    announced once (``delivery.failed``), by the claim that wrote it. Where the database
    takes arrays the batch is one statement executed once; elsewhere one ``executemany``
    for the outcomes, and the failures one by one, to know which held.
    """
    if not settlements:
        return 0
    now = now or utcnow()
    if dialect_for(conn).supports_array_binds:
        return _settle_batch(conn, settlements, now)
    failed = []
    params = []
    for s in settlements:
        values = dict(zip(_BIND_NAMES, _outcome(s), strict=True))
        values["b_now"] = now
        (failed if s.status == DeliveryStatus.FAILED else params).append((s, values))
    written = 0
    if params:
        rowcount = _SETTLE.on(conn).executemany(conn, [values for _, values in params])
        written = max(rowcount, 0)
    announced = []
    one = _SETTLE_ONE.on(conn) if failed else None
    for s, values in failed:
        assert one is not None
        if one.execute(conn, values):
            announced.append((s.id, str(s.claim_token)))
    events.deliveries_failed(conn, announced)
    return written + len(announced)


def _settle_batch(conn: Connection, settlements: Sequence[Settlement], now: datetime) -> int:
    """:func:`settle` in one statement: one array per field of the outcomes; the
    failures announced are those whose delivery and claim came back (matched on both: a
    batch can hold a stalled claim's outcome beside the current one's)."""
    columns = zip(*(_outcome(s) for s in settlements), strict=True)
    values: dict[str, Any] = dict(zip(_BIND_NAMES, map(list, columns), strict=True))
    values["b_now"] = now
    held = set(_SETTLE_BATCH.on(conn).execute(conn, values))
    announced = [
        (s.id, str(s.claim_token))
        for s in settlements
        if s.status == DeliveryStatus.FAILED and (s.id, s.claim_token) in held
    ]
    events.deliveries_failed(conn, announced)
    return len(held)


def release(conn: Connection, claims: Sequence[Claimed], now: datetime | None = None) -> None:
    """Give back claims that were never sent (a dispatcher stopping cleanly): queued and
    due again at once, the attempt not counted, instead of waiting out their lease."""
    if not claims:
        return
    now = now or utcnow()
    conn.execute(
        _fenced().values(
            status=DeliveryStatus.QUEUED,
            attempts=deliveries.c.attempts - 1,
            next_attempt_at=now,
            claimed_by=None,
            updated_at=now,
        ),
        [{"b_id": c.id, "b_token": c.claim_token} for c in claims],
    )


def settle_by_echo(
    conn: Connection, delivery_id: UUID, platform_message_id: str, now: datetime | None = None
) -> bool:
    """The platform reports it delivered this delivery's message (Meta's echo): ``sent``,
    whatever a dispatcher concluded (a lost answer, a timeout, even a give-up). True when
    the echo named a delivery of ours that was not settled as sent yet."""
    now = now or utcnow()
    row = conn.execute(
        sa.update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status != DeliveryStatus.SENT)
        .values(
            status=DeliveryStatus.SENT,
            platform_message_id=platform_message_id,
            sent_at=now,
            last_error=None,
            claimed_by=None,
            updated_at=now,
        )
        .returning(deliveries.c.id)
    ).first()
    if row is not None:
        # A later delivery to the customer, held back by this one, may go now.
        events.queued_delivery()
    return row is not None


# How many times an echo without our metadata looks for the send it may be of, when a
# concurrent echo settles the one it found first (two identical replies in flight).
UNLABELLED_ECHO_LOOKS = 3


def settle_unlabelled_echo(
    conn: Connection,
    connection: Row,
    *,
    psid: str,
    mid: str,
    text: str,
    now: datetime | None = None,
) -> bool:
    """True when an echo that does not carry a delivery id of ours in its metadata is
    nonetheless of one of noclash's own sends to ``psid`` through ``connection``: it is
    then settled (or was already) and must store nothing.

    Why: Meta does not always give the metadata back (Instagram's echoes may leave it
    out), and such an echo was stored as a message sent from the Page inbox, so the
    transcript showed the reply twice. It is ours when

    - a delivery to the customer already has the echo's ``mid`` as its platform id (the
      send's answer came first: nothing to do), or
    - a reply to the customer is on its way (``sending``: in flight, or waiting for its
      echo after a lost answer) or ``unknown``, with the echo's text: the echo came
      before the send's answer was written, or instead of it. That delivery, the oldest
      such, is settled as ``sent`` with the echo's ``mid``, as a labelled echo settles
      it; the dispatcher's own outcome is then dropped by its claim's fence.

    A person who types, in the Page inbox, the very text of a reply noclash is sending to
    the same customer at that moment is taken for that reply's echo: the customer got the
    text, and the transcript shows it once.

    Read through the customer's conversations (``ix_conversations_connection_id_psid_status``
    then ``ix_deliveries_conversation_id_id``): the customer's deliveries, never the
    connection's whole history.
    """
    now = now or utcnow()
    customers = (
        sa.select(conversations.c.id)
        .where(conversations.c.connection_id == connection.id, conversations.c.psid == psid)
        .scalar_subquery()
    )
    to_customer = (
        deliveries.c.conversation_id.in_(customers),
        deliveries.c.destination == connection.channel,
        deliveries.c.recipient == psid,
    )
    settled = sa.select(deliveries.c.id).where(
        *to_customer, deliveries.c.platform_message_id == mid
    )
    if conn.execute(settled.limit(1)).first() is not None:
        return True
    on_its_way = (
        sa.select(deliveries.c.id)
        .join(messages, messages.c.id == deliveries.c.message_id)
        .where(
            *to_customer,
            deliveries.c.status.in_((DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN)),
            messages.c.text == text,
        )
        .order_by(deliveries.c.id)
        .limit(1)
    )
    for _ in range(UNLABELLED_ECHO_LOOKS):
        found = conn.execute(on_its_way).scalar()
        if found is None:
            return False
        if settle_by_echo(conn, found, mid, now):
            return True
        # A concurrent echo settled that one first: look for the next.
    return False


def fail_webhook_deliveries(conn: Connection, chatbot_id: UUID, now: datetime | None = None) -> int:
    """Fail the chatbot's events still on their way to its webhook (its ``webhook_url`` was
    removed), each with :data:`WEBHOOK_REMOVED` and its ``delivery.failed`` event; how
    many. A dispatcher sending one right now cannot undo it: its outcome is written only
    while the delivery is ``sending`` (:func:`settle`)."""
    now = now or utcnow()
    of_chatbot = sa.select(conversations.c.id).where(conversations.c.chatbot_id == chatbot_id)
    failed = conn.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.destination == WEBHOOK_DESTINATION,
            deliveries.c.status.in_(PENDING_DELIVERY),
            deliveries.c.conversation_id.in_(of_chatbot),
        )
        .values(
            status=DeliveryStatus.FAILED,
            last_error=WEBHOOK_REMOVED,
            claimed_by=None,
            updated_at=now,
        )
        .returning(deliveries.c.id)
    ).all()
    # A failed webhook delivery is never queued again, so this is its one failure.
    events.deliveries_failed(conn, [(row.id, "webhook_url-removed") for row in failed])
    return len(failed)


def is_own_delivery(
    conn: Connection, delivery_id: UUID, *, channel: str, page_id: str, psid: str
) -> bool:
    """True when ``delivery_id`` names a delivery noclash made to this customer of this
    Page on this channel (an echo of our own send).

    Why all four: the id alone is not proof. Another app of the same Page can send a
    message whose metadata is any delivery id it has seen (one in a ``delivery.failed``
    event, say), and its echo reaches noclash signed like ours; settling by id alone would
    mark another conversation's, or another tenant's, delivery sent without sending it.
    """
    found = conn.execute(
        sa.select(deliveries.c.id)
        .join(connections, connections.c.id == deliveries.c.connection_id)
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.destination == channel,
            deliveries.c.recipient == psid,
            connections.c.channel == channel,
            connections.c.external_id == page_id,
        )
    )
    return found.first() is not None


def retry(
    conn: Connection, message_id: UUID | str, *, owner_id: UUID, now: datetime | None = None
) -> Row:
    """Queue a ``failed`` or ``unknown`` delivery of the caller's message again, due now,
    with a fresh count of attempts. Returns the delivery. Any other state is a 409 (it is
    already on its way, or sent); a message without a platform delivery is a 404.

    A delivery that could only fail again is a 409 too, naming why: its connection was
    deleted (``connection_id``) or has no access token (``access_token``). Queuing it
    would answer "queued", fail it at the next claim and announce a second
    ``delivery.failed``: a Retry button that says yes and does nothing, which is what a
    support team least trusts. (``POST /api/connections/{id}/retry-failed`` refuses the
    same way.)"""
    now = now or utcnow()
    ident = message_id if isinstance(message_id, UUID) else parse_uuid(message_id)
    if ident is None:
        raise NotFound("message not found")
    owned = (
        sa.select(deliveries, connections.c.access_token)
        .join(conversations, conversations.c.id == deliveries.c.conversation_id)
        .join(chatbots, chatbots.c.id == conversations.c.chatbot_id)
        .outerjoin(connections, connections.c.id == deliveries.c.connection_id)
        .where(deliveries.c.message_id == ident, chatbots.c.owner_id == owner_id)
        .with_for_update(of=deliveries)
    )
    delivery = conn.execute(owned).first()
    if delivery is None:
        raise NotFound("this message has no platform delivery")
    if delivery.status not in RETRYABLE:
        raise Conflict(
            f"the delivery is {delivery.status}; only a failed or unknown one is retried",
            fields=("status",),
            current_status=delivery.status,
        )
    if delivery.connection_id is None:
        raise Conflict(
            "the message's connection was deleted: nothing can send it any more",
            fields=("connection_id",),
            current_status=delivery.status,
        )
    if not delivery.access_token:
        raise Conflict(
            "the connection has no access_token: set one (PATCH /api/connections/{id}) "
            "before sending again",
            fields=("access_token",),
            current_status=delivery.status,
        )
    events.queued_delivery()
    return conn.execute(
        sa.update(deliveries)
        .where(deliveries.c.id == delivery.id, deliveries.c.status.in_(RETRYABLE))
        .values(**requeued(now))
        .returning(*deliveries.c)
    ).one()


def requeued(now: datetime) -> dict[str, Any]:
    """The values that queue a delivery again when someone asks (a retry): due now, a
    fresh count of attempts, no claim. The last error stays until an attempt replaces
    it, so the answer to the retry still says what went wrong before."""
    return {
        "status": DeliveryStatus.QUEUED,
        "attempts": 0,
        "next_attempt_at": now,
        "claimed_by": None,
        "updated_at": now,
    }


__all__ = [
    "CONNECTION_GONE",
    "NO_ACCESS_TOKEN",
    "WEBHOOK_REMOVED",
    "Claimed",
    "Settlement",
    "claim_due",
    "fail_webhook_deliveries",
    "is_own_delivery",
    "queue_delivery",
    "release",
    "requeued",
    "retry",
    "settle",
    "settle_by_echo",
    "settle_unlabelled_echo",
]
