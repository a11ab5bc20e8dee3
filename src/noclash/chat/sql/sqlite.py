"""SQLite: no DML in a CTE, so a step is a statement or two, and triggers write the rest.

The schema's triggers make one INSERT do what PostgreSQL does in a CTE: a conversation's
slug goes into the registry (migration 0002) and a message moves its conversation forward
(:data:`noclash.chat.sql.touch.SQLITE_TRIGGER`, migration 0003). No row lock is needed:
noclash writes under ``BEGIN IMMEDIATE``, so one writer at a time holds the database and
nothing can change between two statements of a step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import cache
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.chat.sql.base import (
    ACTIVE_KEY_WHERE,
    MESSAGE_COLUMNS,
    ChatSQL,
    Row,
    Seen,
    Started,
    active_conversation_query,
    has_webhook,
    inbound_message,
    message_select,
    param,
    two_attempts,
)
from noclash.db.tables import connections, conversations, messages
from noclash.unique import translating


@cache
def claim_statement(insert: Any) -> Any:
    """The two slug attempts; the registry row is the trigger's, and a former slug makes
    the trigger skip the row like a taken one, so a stored row is always registered."""
    return two_attempts(insert)


# The delivery's chatbot, for RETURNING: a scalar subquery on the delivery's connection
# (a primary key's lookup), since SQLite's RETURNING can name only the inserted row.
_CHATBOT = (
    sa.select(connections.c.chatbot_id)
    .where(connections.c.id == param("connection", connections.c.id))
    .scalar_subquery()
)
# The conversation's status before the message's touch trigger ran: SQLite computes a
# row's RETURNING values before the AFTER triggers its change fires (RETURNING is coded as
# the first of them), and the whole statement runs under the file's write lock, so this
# is the status the trigger found. SNOOZED: this message woke it.
# tests/test_review_events.py checks it on every run, in case a SQLite ever orders otherwise.
# Written out: SQLAlchemy renders RETURNING's columns unqualified, and an unqualified
# "id" in a subquery there is ambiguous.
_STATUS_BEFORE_TOUCH = sa.literal_column(
    "(SELECT touched.status FROM conversations AS touched"
    " WHERE touched.id = messages.conversation_id)",
    type_=conversations.c.status.type,
)


@cache
def _deliver_statement(insert: Any) -> Any:
    """``INSERT INTO messages ... SELECT`` from the active conversation: one statement that
    finds the conversation by the partial index and stores the message deduped; the
    trigger moves the conversation. It answers with what the message's events need: the
    chatbot, and whether it has a webhook."""
    return (
        insert(messages)
        .from_select(
            MESSAGE_COLUMNS,
            message_select(conversations.c.id).where(
                conversations.c.connection_id
                == param("connection", conversations.c.connection_id),
                conversations.c.psid == param("customer", conversations.c.psid),
                ACTIVE_KEY_WHERE,
            ),
        )
        .on_conflict_do_nothing(index_elements=["connection_id", "platform_message_id"])
        .returning(
            messages.c.id,
            messages.c.conversation_id,
            _CHATBOT.label("chatbot_id"),
            has_webhook(_CHATBOT),
            _STATUS_BEFORE_TOUCH.label("touched_status"),
        )
    )


# After a miss: the connection's chatbot, the message as stored before, the active
# conversation, in one read.
_MISSED = (
    sa.select(
        connections.c.chatbot_id,
        conversations.c.id.label("conversation_id"),
        sa.null().label("message_id"),
        messages.c.id.label("known_id"),
        messages.c.conversation_id.label("known_conversation_id"),
        has_webhook(connections.c.chatbot_id),
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
                ACTIVE_KEY_WHERE,
            ),
        )
    )
    .where(connections.c.id == sa.bindparam("connection"))
)


@cache
def _insert_message_statement(insert: Any) -> Any:
    """``INSERT ... ON CONFLICT (connection_id, platform_message_id) DO NOTHING``; values
    travel as parameters."""
    return (
        insert(messages)
        .on_conflict_do_nothing(index_elements=["connection_id", "platform_message_id"])
        .returning(messages.c.id)
    )


class SQLiteChatSQL(ChatSQL):
    messages_move_conversations: ClassVar[bool] = True

    def claim(self, conn: Connection, values: dict[str, Any]) -> tuple[Row | None, bool]:
        row = conn.execute(claim_statement(self.insert), values).first()
        return row, row is not None

    def deliver(
        self, conn: Connection, params: dict[str, Any], *, exclusive: bool = True
    ) -> Seen | Row | None:
        """The message into the active conversation; on a miss, one read of the
        connection, the stored message and the active conversation. ``exclusive`` changes
        nothing: the trigger's touch is never skipped."""
        with translating(messages.metadata):
            stored = conn.execute(_deliver_statement(self.insert), params).first()
        if stored is not None:
            return Seen(stored.chatbot_id, stored.conversation_id, stored.id, None, None,
                        has_webhook=stored.has_webhook,
                        touched_status=stored.touched_status)  # fmt: skip
        return conn.execute(_MISSED, params).first()

    def start(
        self, conn: Connection, params: dict[str, Any], candidates: Iterator[str]
    ) -> Started | None:
        """Each pair of candidates in a claim, until one is stored, then the message; a
        claim that stores nothing while another conversation is active ends the start."""
        for slug in itertools.chain((params["slug"],), candidates):
            params["slug"] = slug
            params["fallback_slug"] = next(candidates, slug)
            with translating(conversations.metadata):
                row, registered = self.claim(conn, params)
            if row is not None:
                with translating(messages.metadata):
                    message_id = conn.execute(
                        _insert_message_statement(self.insert), inbound_message(params, row.id)
                    ).scalar()
                return Started(row, registered, message_id)
            active = active_conversation_query(params["connection"], params["customer"])
            if conn.execute(active).first() is not None:
                return None  # another delivery's conversation holds the key: deliver into it
        return None


__all__ = ["SQLiteChatSQL", "claim_statement"]
