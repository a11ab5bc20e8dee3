"""The touch rule, in one place: a stored message moves its conversation forward.

``last_message_at`` becomes the message's time (``sent_at``, else when it was received)
only when that is later: platforms redeliver and reorder, so an older message arriving
late must not rewind it. An inbound message also wakes a SNOOZED conversation (OPEN, no
``snoozed_until``); an agent's reply moves ``last_message_at`` but leaves a snooze alone.
The comparison always happens in the database, in the statement that writes, so two
deliveries racing for one row cannot interleave a read and a write.

The rule has two forms, both defined here:

- SQLAlchemy expressions (:func:`moves_forward`, :func:`needs_touch`,
  :func:`touch_values`), which PostgreSQL's delivery statement, a reply's :func:`touch`
  and the :func:`catch_up` after a skipped touch are built from;
- :data:`SQLITE_TRIGGER`, the trigger that makes a message INSERT move its conversation
  on SQLite, which has no DML in a CTE to do it in the delivery statement.

Migration 0003 creates the trigger from a frozen copy of this text, because a migration
must do tomorrow exactly what it did when it ran. ``tests/test_touch_rule.py`` checks that
the two forms agree on every case on real SQLite and PostgreSQL, and that the migration's
copy equals :data:`SQLITE_TRIGGER`: changing the rule takes a new migration that replaces
the trigger.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.db.tables import Direction, Status, conversations, messages
from noclash.db.types import UTCDateTime


def _at() -> sa.BindParameter[datetime]:
    """``:at``, the message's time."""
    return sa.bindparam("at", type_=UTCDateTime())


def moves_forward(last: sa.ColumnElement[Any], at: sa.ColumnElement[Any]) -> Any:
    """Whether a message at ``at`` is later than ``last`` (a NULL ``last`` is earliest)."""
    return sa.or_(last.is_(None), last < at)


def _snoozed(table: sa.Table | Any) -> sa.ColumnElement[bool]:
    return table.c.status == sa.literal(Status.SNOOZED.value)


def needs_touch(table: sa.Table | Any) -> sa.ColumnElement[bool]:
    """Whether an inbound message at ``:at`` changes this conversation: a later
    ``last_message_at``, or a snooze to wake. The delivery's touch and its decision to
    catch up both ask this."""
    return sa.or_(moves_forward(table.c.last_message_at, _at()), _snoozed(table))


def touch_values(*, wake: bool) -> dict[str, Any]:
    """The SET clause: ``last_message_at`` to ``:at`` unless already later; with ``wake``
    (an inbound message), a snooze woken."""
    at = _at()
    last = conversations.c.last_message_at
    values: dict[str, Any] = {"last_message_at": sa.case((moves_forward(last, at), at), else_=last)}
    if wake:
        snoozed = _snoozed(conversations)
        values["status"] = sa.case(
            (snoozed, sa.literal(Status.OPEN.value)), else_=conversations.c.status
        )
        values["snoozed_until"] = sa.case((snoozed, sa.null()), else_=conversations.c.snoozed_until)
    return values


@cache
def _touch_statement(wake: bool) -> sa.Update:
    return (
        sa.update(conversations)
        .where(conversations.c.id == sa.bindparam("conversation_id"))
        .values(touch_values(wake=wake))
    )


def touch(conn: Connection, conversation_id: UUID, at: datetime, *, reopen_snoozed: bool) -> None:
    """Move ``last_message_at`` forward to ``at`` (never back); optionally wake a snooze.

    One UPDATE with a CASE, so the comparison happens in the database under the row lock
    and concurrent or out-of-order messages cannot rewind it.
    """
    conn.execute(_touch_statement(reopen_snoozed), {"at": at, "conversation_id": conversation_id})


@cache
def _catch_up_statement() -> sa.Update:
    """``last_message_at`` to the newest message stored since ``:since_id``, if still behind
    ``:at``: the touch a delivery skipped, run after its commit.

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
    at = _at()
    return (
        sa.update(conversations)
        .where(
            conversations.c.id == sa.bindparam("conversation_id"),
            moves_forward(conversations.c.last_message_at, at),
        )
        .values(last_message_at=sa.func.coalesce(newest, at))
    )


def catch_up(conn: Connection, conversation_id: UUID, at: datetime, since_id: UUID) -> None:
    """Run the touch a delivery of a message at ``at`` (id ``since_id``) skipped."""
    conn.execute(
        _catch_up_statement(),
        {"conversation_id": conversation_id, "at": at, "since_id": since_id},
    )


TRIGGER = "messages_move_conversation"

# The SQLite form of the rule: AFTER INSERT ON messages, the same comparisons as above on
# NEW's time, coalesce(sent_at, created_at). Its WHERE leaves a conversation alone when the
# message neither moves it forward nor wakes it (an out-of-order delivery, or a new
# conversation's first message, inserted with last_message_at already set). SQLite runs
# one writer at a time (noclash writes under BEGIN IMMEDIATE), so the comparison and the
# write cannot interleave with another message's; timestamps are fixed-width ISO text,
# which sorts as time does.
SQLITE_TRIGGER = f"""
    CREATE TRIGGER {TRIGGER}
    AFTER INSERT ON messages
    BEGIN
        UPDATE conversations SET
            last_message_at = CASE
                WHEN last_message_at IS NULL
                  OR last_message_at < coalesce(NEW.sent_at, NEW.created_at)
                THEN coalesce(NEW.sent_at, NEW.created_at)
                ELSE last_message_at
            END,
            snoozed_until = CASE
                WHEN NEW.direction = '{Direction.IN}' AND status = '{Status.SNOOZED}' THEN NULL
                ELSE snoozed_until
            END,
            status = CASE
                WHEN NEW.direction = '{Direction.IN}' AND status = '{Status.SNOOZED}' THEN '{Status.OPEN}'
                ELSE status
            END
        WHERE id = NEW.conversation_id
          AND (last_message_at IS NULL
               OR last_message_at < coalesce(NEW.sent_at, NEW.created_at)
               OR (NEW.direction = '{Direction.IN}' AND status = '{Status.SNOOZED}'));
    END
"""  # noqa: E501 - the text is the trigger's, line for line

__all__ = [
    "SQLITE_TRIGGER",
    "TRIGGER",
    "catch_up",
    "moves_forward",
    "needs_touch",
    "touch",
    "touch_values",
]
