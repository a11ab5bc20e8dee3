"""PostgreSQL: every step is one statement, a data-modifying CTE.

Locks. A delivery must be ordered against a close (a message never lands in a conversation
whose close committed first), but not against other deliveries:

- it takes ``FOR KEY SHARE`` on the active conversation, the lock its message's foreign key
  takes anyway. Deliveries share it; a close, snooze, reopen or reply, which lock
  ``FOR UPDATE``, waits for them, and a delivery that finds the row so locked waits and
  then re-reads it (a CLOSED row is a miss). The transitions must lock ``FOR UPDATE``
  before they write: a plain UPDATE of a non-key column does not make a later
  ``FOR KEY SHARE`` re-read the row, which would then return the version before the close;
- a redelivery takes no lock at all: ``known`` decides first, so a redelivered webhook
  writes nothing and its commit flushes nothing;
- the touch of ``last_message_at`` (:mod:`noclash.chat.sql.touch`) needs the row's
  ``FOR NO KEY UPDATE`` lock. It is taken ``SKIP LOCKED``: when another delivery is
  touching the row right now, this one stores its message without waiting and reports
  the skipped touch, which :func:`noclash.chat.inbound.receive_message` catches up after
  its commit. A burst of messages for one customer therefore commits together instead of
  one lock holder at a time. Waking a snooze cannot be deferred like that: a delivery that
  finds a SNOOZED row being touched runs again exclusively;
- exclusively means: first ``FOR NO KEY UPDATE`` on the active conversation in a statement
  of its own, which may wait but holds nothing of the delivery yet, then the delivery
  pinned to that conversation, whose touch the lock guarantees.

Lock order. Every transaction takes the touch lock before the message key: the
delivery statement locks ``active``, then ``lockable``, and only then inserts ``stored``
(whose unique entry a concurrent delivery of the same message waits for until this
transaction ends), and the exclusive path locks in a statement before its delivery.
``SKIP LOCKED`` does not mean the statement never waits: when the row version its
snapshot sees was updated by a transaction that committed since, and is still locked by
a running one (the delivery's own ``FOR KEY SHARE`` is enough), PostgreSQL follows the
update chain and locks the newer versions first, and that walk waits for a conflicting
holder of a newer version whatever the wait policy ("while locking updated version of
tuple"). Taken the other way round, key then lock, that deadlocks: an exclusive delivery
holds the touch lock and waits for the key of the same message, which a normal delivery
has just inserted and which then walks into the exclusive delivery's lock. In this order
a delivery can wait for a row lock only before it holds its key, and the key's holder,
once it has it, waits for nothing: its locks are taken, and the foreign key's check asks
for the ``FOR KEY SHARE`` it already holds. A transaction that waits for ``FOR UPDATE``
holds nothing yet. ``tests/test_inbound_locks.py`` forces that cycle's interleaving step
by step, and checks the order.

A caller that delivers into several conversations in one transaction of its own takes
their locks in its order, and two such callers can deadlock with each other like any two
transactions locking two rows in opposite orders: noclash cannot retry a transaction it
does not own, so the caller gets the error (SQLSTATE 40P01) and retries the transaction
(the dedupe key makes the retry store each message once). noclash's own callers deliver
one message per transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.chat import events
from noclash.chat.sql.base import (
    MESSAGE_COLUMNS,
    ChatSQL,
    Row,
    Started,
    active_conversation_query,
    has_webhook,
    inbound_message,
    message_select,
    param,
    two_attempts,
)
from noclash.chat.sql.touch import needs_touch, touch_values
from noclash.db.tables import connections, conversation_slugs, conversations, messages
from noclash.unique import translating

CONVERSATION = events.EventType.CONVERSATION_CREATED
MESSAGE = events.EventType.MESSAGE_CREATED


@cache
def claim_ctes(insert: Any) -> tuple[Any, Any]:
    """``(made, registered)``: the two slug attempts and the registry row, as CTEs. ``made``
    is the conversation stored (if any), ``registered`` its ``conversation_slugs`` row
    (none when the slug is a former slug of another conversation). The start of a
    conversation by a delivery adds the first message to them."""
    made = two_attempts(insert).cte("made")
    registered = (
        insert(conversation_slugs)
        .from_select(
            ["chatbot_id", "slug", "conversation_id", "created_at"],
            sa.select(made.c.chatbot_id, made.c.slug, made.c.id, made.c.created_at),
        )
        .on_conflict_do_nothing()
        .returning(conversation_slugs.c.conversation_id)
        .cte("registered")
    )
    return made, registered


@cache
def claim_statement(insert: Any) -> Any:
    """Conversation and registry row in one statement, two slug candidates."""
    made, registered = claim_ctes(insert)
    return sa.select(
        *made.c, registered.c.conversation_id.is_not(None).label("slug_registered")
    ).select_from(made.outerjoin(registered, sa.true()))


@cache
def _deliver_statement(insert: Any, pinned: bool = False, announce: bool = False) -> Any:
    """Find the active conversation, store the message, move the conversation forward,
    and read what a miss needs, in one statement:

    - ``known``: the message as stored before this statement (a redelivery);
    - ``active``: the OPEN or SNOOZED conversation of (connection, psid), through the
      partial index, unless the message is known (a redelivery locks nothing), locked
      ``FOR KEY SHARE``: a close that commits meanwhile makes it miss;
    - ``lockable``: the touch lock, ``FOR NO KEY UPDATE SKIP LOCKED`` on ``active`` when
      the message moves it: nothing back while another transaction holds it. Taken before
      the message is stored (see *Lock order*);
    - ``stored``: ``INSERT ... SELECT`` from ``active``, ``ON CONFLICT (connection_id,
      platform_message_id) DO NOTHING``, the dedupe key deciding;
    - ``touched``: the forward-only ``last_message_at`` UPDATE (and a snooze woken) of the
      locked row, only for a stored message;
    - the connection's chatbot, for the start of a new conversation, and none at all for
      an unknown connection.

    ``pinned`` narrows ``active`` to ``:locked_id``, the conversation an earlier statement
    of the transaction locked (see :meth:`PostgreSQLChatSQL.deliver`). ``announce`` adds
    the stored message's ``message.created``
    (:func:`noclash.chat.events.message_created_cte`): an inbound message and its event
    in one round trip.
    """
    known = (
        sa.select(messages.c.id, messages.c.conversation_id)
        .where(
            messages.c.connection_id == param("connection", messages.c.connection_id),
            messages.c.platform_message_id
            == param("platform_message_id", messages.c.platform_message_id),
        )
        .cte("known")
    )
    active: Any = (
        active_conversation_query(
            param("connection", conversations.c.connection_id),
            param("customer", conversations.c.psid),
        )
        .with_only_columns(
            conversations.c.id,
            conversations.c.status,
            needs_touch(conversations).label("needs_touch"),
        )
        .where(~sa.exists(known.select()))
        .with_for_update(read=True, key_share=True)
    )
    if pinned:
        active = active.where(conversations.c.id == param("locked_id", conversations.c.id))
    active = active.cte("active")
    lockable = (
        sa.select(conversations.c.id, conversations.c.status)
        .where(conversations.c.id.in_(sa.select(active.c.id)), needs_touch(conversations))
        .with_for_update(key_share=True, skip_locked=True)
        .cte("lockable")
    )
    # The message's row is selected FROM active LEFT JOIN lockable: a nested loop (ON true
    # has no hashable or mergeable clause) that scans lockable, taking the touch lock,
    # before the first row reaches the INSERT. The lock comes before the message key.
    stored = (
        insert(messages)
        .from_select(
            MESSAGE_COLUMNS,
            message_select(active.c.id).select_from(active.outerjoin(lockable, sa.true())),
        )
        .on_conflict_do_nothing(index_elements=["connection_id", "platform_message_id"])
        .returning(messages.c.id, messages.c.conversation_id)
        .cte("stored")
    )
    touched = (
        sa.update(conversations)
        .where(
            conversations.c.id.in_(sa.select(lockable.c.id)),
            conversations.c.id.in_(sa.select(stored.c.conversation_id)),
        )
        .values(touch_values(wake=True))
        .returning(conversations.c.id)
        .cte("touched")
    )
    columns = [
        connections.c.chatbot_id,
        active.c.id.label("conversation_id"),
        stored.c.id.label("message_id"),
        known.c.id.label("known_id"),
        known.c.conversation_id.label("known_conversation_id"),
        active.c.status,
        active.c.needs_touch,
        touched.c.id.label("touched_id"),
        has_webhook(connections.c.chatbot_id),
        # The status the touch found, read under the row's lock (lockable's, the latest
        # committed version): SNOOZED means this message woke it. active's status is the
        # statement's look before that lock, which a concurrent change can outdate.
        sa.case((touched.c.id.is_not(None), lockable.c.status)).label("touched_status"),
    ]
    source = (
        connections.outerjoin(active, sa.true())
        .outerjoin(stored, sa.true())
        .outerjoin(known, sa.true())
        .outerjoin(touched, sa.true())
        .outerjoin(lockable, sa.true())
    )
    if announce:
        chatbot = (
            sa.select(connections.c.chatbot_id)
            .where(connections.c.id == param("connection", connections.c.id))
            .scalar_subquery()
        )
        announced = events.message_created_cte(insert, stored, chatbot)
        columns.append(announced.c.id.label("event_id"))
        source = source.outerjoin(announced, sa.true())
    else:
        columns.append(sa.null().label("event_id"))
    return (
        sa.select(*columns)
        .select_from(source)
        .where(connections.c.id == param("connection", connections.c.id))
    )


@cache
def _lock_active_statement() -> Any:
    """The active conversation ``FOR NO KEY UPDATE``, unless the message is stored
    already: a redelivery locks nothing here either."""
    stored_before = sa.exists().where(
        messages.c.connection_id == param("connection", messages.c.connection_id),
        messages.c.platform_message_id
        == param("platform_message_id", messages.c.platform_message_id),
    )
    return (
        active_conversation_query(
            param("connection", conversations.c.connection_id),
            param("customer", conversations.c.psid),
        )
        .with_only_columns(conversations.c.id)
        .where(~stored_before)
        .with_for_update(key_share=True)
    )


@cache
def _start_statement(insert: Any, announce: bool = False) -> Any:
    """A new conversation (two slug attempts, the registry row) and its first message, in
    one statement: :func:`claim_ctes` plus the message ``INSERT ... SELECT`` from the row it
    made. Nothing back: the partial unique index (or both slugs) said no, and no message
    was stored.

    ``announce`` adds their events, ``conversation.created`` then ``message.created``,
    when the slug made it into the registry: a slug that did not is replaced after the
    statement, and the conversation's event must carry the one it keeps (the caller then
    writes both, in that order)."""
    made, registered = claim_ctes(insert)
    stored = (
        insert(messages)
        .from_select(MESSAGE_COLUMNS, message_select(made.c.id))
        .on_conflict_do_nothing(index_elements=["connection_id", "platform_message_id"])
        .returning(messages.c.id, messages.c.conversation_id)
        .cte("stored")
    )
    columns = [
        *made.c,
        registered.c.conversation_id.is_not(None).label("slug_registered"),
        stored.c.id.label("message_id"),
    ]
    source = made.outerjoin(registered, sa.true()).outerjoin(stored, sa.true())
    if not announce:
        return sa.select(
            *columns, sa.null().label("conversation_event_id"), sa.null().label("event_id")
        ).select_from(source)
    started = events.conversation_created_cte(insert, made, made.join(registered, sa.true()))
    announced = events.message_created_cte(
        insert, stored, made.c.chatbot_id, stored.join(made, sa.true()).join(registered, sa.true())
    )
    return sa.select(
        *columns,
        started.c.id.label("conversation_event_id"),
        announced.c.id.label("event_id"),
    ).select_from(source.outerjoin(started, sa.true()).outerjoin(announced, sa.true()))


class PostgreSQLChatSQL(ChatSQL):
    def claim(self, conn: Connection, values: dict[str, Any]) -> tuple[Row | None, bool]:
        row = conn.execute(claim_statement(self.insert), values).first()
        if row is None:
            return None, False
        return row, bool(row.slug_registered)

    def deliver(
        self, conn: Connection, params: dict[str, Any], *, exclusive: bool = True
    ) -> Row | None:
        """The delivery statement; with ``exclusive``, first the active conversation's
        ``FOR NO KEY UPDATE`` lock in a statement of its own (it may wait, holding nothing
        of this delivery yet), then the delivery pinned to the conversation it locked, so
        that its touch cannot be skipped. With nothing locked the pinned delivery misses,
        and a conversation that became active in between makes the start fail and the next
        round lock it."""
        if exclusive:
            params["locked_id"] = conn.execute(_lock_active_statement(), params).scalar()
        announce = events.enabled(conn)
        if announce and "em_id" not in params:
            message = inbound_message(params, None)
            params.update(events.announced_params(params["received_at"], message))
        statement = _deliver_statement(self.insert, exclusive, announce)
        with translating(messages.metadata):
            return conn.execute(statement, params).first()

    def start(
        self, conn: Connection, params: dict[str, Any], candidates: Iterator[str]
    ) -> Started | None:
        params["fallback_slug"] = next(candidates, params["slug"])
        announce = events.enabled(conn)
        if announce:
            message = inbound_message(params, None)
            params.update(events.announced_params(params["received_at"], message, params))
        with translating(conversations.metadata):
            row = conn.execute(_start_statement(self.insert, announce), params).first()
        if row is None:
            return None
        announced = (
            ((row.conversation_event_id, CONVERSATION), (row.event_id, MESSAGE))
            if row.event_id
            else ()
        )
        return Started(row, row.slug_registered, row.message_id, announced)


__all__ = ["PostgreSQLChatSQL", "claim_ctes", "claim_statement"]
