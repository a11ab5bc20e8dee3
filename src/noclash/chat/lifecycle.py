"""Conversation lifecycle: close, snooze, reopen.

::

              inbound message (new)            close
    (none) ─────────────────────────▶ OPEN ─────────────▶ CLOSED
                                      ▲  │ snooze            │
                  inbound message,    │  ▼                   │ reopen (409 if another
                  reopen              SNOOZED ──close──▶     │ conversation is active)
                                      ▲                      │
                                      └──────────────────────┘

OPEN and SNOOZED are *active*: the partial unique index
``uq_conversations_active_connection_id_psid`` allows at most one active conversation per
(connection, psid) and any number of CLOSED ones, and
``uq_conversations_active_unconnected_chatbot_id_psid`` the same per (chatbot, psid) for
conversations without a connection. Every transition is one conditional
UPDATE (``WHERE id = :id AND status IN (...)``) so the row lock orders it against
concurrent inbound messages, and the outcome is read from ``RETURNING`` instead of from an
earlier SELECT. The row is locked ``FOR UPDATE`` before the UPDATE: on PostgreSQL that is
the lock a delivery's ``FOR KEY SHARE`` waits for and the reason it re-reads the row once
the transition commits; after a plain UPDATE of non-key columns it would not, and would
deliver into the version it saw (see *Locks* in :mod:`noclash.chat.sql.postgresql`).

Reopening is the only transition that can collide with the index (a new message may have
opened another conversation meanwhile). It runs inside a SAVEPOINT: the database decides,
and a violation rolls back only the savepoint (PostgreSQL would otherwise abort the whole
transaction), then the active conversation is read and named in a 409.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.chat import events
from noclash.chat.conversations import (
    ACTIVE_KEY,
    UNCONNECTED_ACTIVE_KEY,
    find_active_of,
    get_conversation,
)
from noclash.chat.errors import Conflict, InvalidInput
from noclash.db.tables import ACTIVE_STATUSES, Status, conversations
from noclash.db.types import utcnow
from noclash.unique import ClaimNotSettled, UniqueViolation, translating

Row = sa.Row[Any]

ACTIVE_KEYS = frozenset({ACTIVE_KEY, UNCONNECTED_ACTIVE_KEY})
# What each key's 409 names as the fields at fault.
_KEY_FIELDS = {ACTIVE_KEY: ("connection_id", "psid"), UNCONNECTED_ACTIVE_KEY: ("psid",)}
REOPEN_ATTEMPTS = 5


def _transition(
    conn: Connection, row: Row, from_statuses: tuple[str, ...], **values: Any
) -> Row | None:
    """Move the locked conversation ``row`` if its status is one of ``from_statuses``; the
    new row, or None. A change of status is announced (``conversation.status_changed``)
    in the same transaction."""
    moved = conn.execute(
        sa.update(conversations)
        .where(conversations.c.id == row.id, conversations.c.status.in_(from_statuses))
        .values(**values)
        .returning(*conversations.c)
    ).first()
    if moved is not None and moved.status != row.status:
        events.status_changed(conn, moved, row.status)
    return moved


def close(
    conn: Connection, conversation_id: UUID | str, *, owner_id: UUID, now: datetime | None = None
) -> Row:
    """Close the caller's conversation; closing a CLOSED one changes nothing (idempotent)."""
    row = get_conversation(conn, conversation_id, owner_id=owner_id, lock=True)
    closed = _transition(
        conn,
        row,
        ACTIVE_STATUSES,
        status=Status.CLOSED,
        closed_at=now or utcnow(),
        snoozed_until=None,
    )
    return closed or row


def snooze(
    conn: Connection,
    conversation_id: UUID | str,
    *,
    owner_id: UUID,
    until: datetime | None = None,
    now: datetime | None = None,
) -> Row:
    """Snooze an active conversation (optionally until a time). A CLOSED one is a 409.

    A snoozed conversation stays active: the next inbound message re-opens it rather than
    starting another one.
    """
    now = now or utcnow()
    if until is not None and (until.tzinfo is None or until <= now):
        raise InvalidInput("until must be a future time with a timezone offset", field="until")
    row = get_conversation(conn, conversation_id, owner_id=owner_id, lock=True)
    snoozed = _transition(conn, row, ACTIVE_STATUSES, status=Status.SNOOZED, snoozed_until=until)
    if snoozed is None:
        raise Conflict(
            "a closed conversation cannot be snoozed; reopen it first",
            fields=("status",),
            conversation_id=str(row.id),
            current_status=row.status,
        )
    return snoozed


def reopen(conn: Connection, conversation_id: UUID | str, *, owner_id: UUID) -> Row:
    """Make the caller's conversation OPEN again.

    OPEN stays OPEN, SNOOZED wakes up. CLOSED becomes OPEN unless another conversation of
    the same customer is active (same connection and psid; without a connection, same
    chatbot and psid): then a 409 names that conversation. The partial
    unique index makes that decision, not a prior SELECT, so two concurrent reopens (or a
    reopen racing an inbound message) can never leave two active conversations.
    """
    row = get_conversation(conn, conversation_id, owner_id=owner_id, lock=True)
    if row.status == Status.OPEN:
        return row
    if row.status == Status.SNOOZED:
        woken = _transition(conn, row, (Status.SNOOZED,), status=Status.OPEN, snoozed_until=None)
        return woken or row
    for _ in range(REOPEN_ATTEMPTS):
        try:
            with conn.begin_nested(), translating(conversations.metadata):
                reopened = _transition(
                    conn, row, (Status.CLOSED,), status=Status.OPEN, closed_at=None
                )
        except UniqueViolation as exc:
            if exc.constraint not in ACTIVE_KEYS:
                raise
            active = find_active_of(conn, row.chatbot_id, row.connection_id, row.psid)
            if active is None:
                continue  # the other one closed meanwhile: try again
            raise Conflict(
                f"conversation {active.id} is already active for this customer; "
                "close it before reopening this one",
                fields=_KEY_FIELDS[exc.constraint],
                conversation_id=str(active.id),
            ) from exc
        return reopened or get_conversation(conn, row.id, owner_id=owner_id)
    raise ClaimNotSettled("reopen kept colliding with an active conversation that vanished")


def wake_due_snoozes(conn: Connection, *, now: datetime | None = None) -> list[UUID]:
    """Reopen every SNOOZED conversation whose ``snoozed_until`` has passed; their ids.

    One statement for all of them, safe beside any number of other dispatchers doing the
    same: the rows are taken ``FOR UPDATE SKIP LOCKED`` (on PostgreSQL; SQLite's write lock
    serialises), so a conversation that a delivery or a lifecycle change holds right now
    is left for the next round instead of waited for, and the ``status = 'SNOOZED'``
    condition makes a second wake of the same row a no-op. ``ix_conversations_snoozed_until``
    keeps the search to snoozed rows.
    """
    now = now or utcnow()
    due = (
        sa.select(conversations.c.id)
        .where(
            conversations.c.status == Status.SNOOZED,
            conversations.c.snoozed_until <= now,
        )
        .with_for_update(skip_locked=True)
    )
    woken = conn.execute(
        sa.update(conversations)
        .where(
            conversations.c.id.in_(due.scalar_subquery()),
            conversations.c.status == Status.SNOOZED,
        )
        .values(status=Status.OPEN, snoozed_until=None)
        .returning(conversations.c.id)
    )
    ids = [row.id for row in woken]
    events.statuses_changed(conn, ids, Status.SNOOZED)
    return ids


__all__ = ["close", "reopen", "snooze", "wake_due_snoozes"]
