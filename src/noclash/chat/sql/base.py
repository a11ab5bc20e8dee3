"""The contract of the engine-specific SQL of chat/, and the portable pieces it is built of.

The algorithms (:func:`noclash.chat.inbound.receive_message`,
:func:`noclash.chat.conversations.insert_conversation`) are written once and call a
:class:`ChatSQL` for the steps whose statements differ per engine. PostgreSQL does each
step in one data-modifying CTE; SQLite, which has no DML in a CTE, does it in a statement
or two and lets the schema's triggers (migrations 0002 and 0003) write the rest. Both
answer in the shapes defined here, so the algorithm never asks which engine it runs on.

Every method runs in the caller's transaction and decides nothing with a read: the unique
keys decide, and a step reports what they said.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.db.dialects import Dialect
from noclash.db.tables import ACTIVE_STATUSES, Direction, chatbots, conversations, messages

if TYPE_CHECKING:
    from noclash.chat.events import EventType

Row = sa.Row[Any]

# The partial unique index's predicate, rendered with literals: bound parameters would hide
# it from PostgreSQL's generic plans, which then could not use the partial index.
ACTIVE_KEY_WHERE = conversations.c.status.in_(
    [sa.literal_column(f"'{status}'") for status in ACTIVE_STATUSES]
)

def active_conversation_query(connection_id: UUID | Any, psid: str | Any) -> sa.Select[Any]:
    """The active conversation of (connection, psid): the lookup the partial index serves.

    Its WHERE repeats the index predicate (``status IN ('OPEN', 'SNOOZED')``) so that
    PostgreSQL and SQLite can use ``uq_conversations_active_connection_id_psid``, which
    holds only active rows and so stays small however many CLOSED conversations pile up.
    """
    return sa.select(conversations).where(
        conversations.c.connection_id == connection_id,
        conversations.c.psid == psid,
        ACTIVE_KEY_WHERE,
    )


def has_webhook(chatbot_id: Any) -> sa.ColumnElement[bool]:
    """Whether the chatbot ``chatbot_id`` (a column) has a webhook: read by the delivery
    statement itself, so that its events need no statement to find out
    (:func:`noclash.chat.events.record_all`)."""
    return (
        sa.exists()
        .where(chatbots.c.id == chatbot_id, chatbots.c.webhook_url.is_not(None))
        .label("has_webhook")
    )


def param(name: str, column: sa.Column[Any]) -> Any:
    """A bound parameter typed as ``column`` (psycopg then renders it with a cast, which a
    parameter selected in ``INSERT ... SELECT`` needs on PostgreSQL)."""
    return sa.bindparam(name, type_=column.type)


# -- conversations: two slug attempts in one statement ----------------------------------------

CONVERSATION_COLUMNS = (
    "id",
    "chatbot_id",
    "connection_id",
    "psid",
    "status",
    "title",
    "slug",
    "created_at",
    "closed_at",
    "last_message_at",
)


def _bound_values(slug_param: str = "slug") -> list[Any]:
    return [
        param(slug_param if name == "slug" else name, conversations.c[name])
        for name in CONVERSATION_COLUMNS
    ]


def two_attempts(insert: Any) -> Any:
    """``INSERT INTO conversations SELECT <:slug row> UNION ALL SELECT <:fallback_slug row>
    ON CONFLICT DO NOTHING RETURNING *``: two slug attempts in one statement.

    Both rows carry the same id, so at most one is stored: the first (the plain slug) when
    the unique indexes accept it, else the second, whose id is then free. Each row is an
    attempt the unique indexes decide, as if sent alone; a title that is already taken
    costs one statement, not two. Nothing back: both slugs are taken, or another
    conversation holds the active (connection, psid) key. (``INSERT ... SELECT``, not a
    multi-row ``VALUES``: SQLAlchemy caches the compiled form of the former only.)
    """
    rows = sa.select(*_bound_values()).union_all(
        sa.select(*_bound_values(slug_param="fallback_slug"))
    )
    return (
        insert(conversations)
        .from_select(list(CONVERSATION_COLUMNS), rows)
        .on_conflict_do_nothing()
        .returning(*conversations.c)
    )


# -- messages: the inbound message as parameters ----------------------------------------------

MESSAGE_COLUMNS = [
    "id",
    "conversation_id",
    "connection_id",
    "platform_message_id",
    "direction",
    "text",
    "sent_at",
    "created_at",
]


def inbound_message(params: dict[str, Any], conversation_id: Any) -> dict[str, Any]:
    """The inbound message's columns from the delivery's parameters."""
    return {
        "id": params["message_id"],
        "conversation_id": conversation_id,
        "connection_id": params["connection"],
        "platform_message_id": params["platform_message_id"],
        "direction": Direction.IN.value,
        "text": params["text"],
        "sent_at": params["sent_at"],
        "created_at": params["received_at"],
    }


def message_select(conversation_id: Any) -> sa.Select[Any]:
    """The inbound message's values as a SELECT of the delivery's parameters, for
    ``INSERT ... SELECT`` (see ``params`` of :class:`ChatSQL`)."""
    c = messages.c
    return sa.select(
        param("message_id", c.id),
        conversation_id,
        param("connection", c.connection_id),
        param("platform_message_id", c.platform_message_id),
        sa.literal(Direction.IN.value, type_=c.direction.type),
        param("text", c.text),
        param("sent_at", c.sent_at),
        param("received_at", c.created_at),
    )


# -- what the steps answer --------------------------------------------------------------------


class Seen(NamedTuple):
    """What a delivery found, with the names of PostgreSQL's delivery row.

    ``message_id`` is the message stored by this delivery, into ``conversation_id``. Else
    ``known_id`` is the message stored before (a redelivery), or ``conversation_id`` is
    the active conversation a concurrent delivery of this message won, or neither: no
    active conversation. ``chatbot_id`` is the connection's (None: unknown connection).
    ``needs_touch`` with no ``touched_id`` means the touch of the conversation was skipped
    because another transaction held it; ``status`` then says whether it was SNOOZED.
    ``has_webhook``: whether the chatbot has a webhook (None: the statement did not say).
    ``event_id``: the stored message's ``message.created``, when the statement wrote it.
    ``touched_status``: the conversation's status as the touch of the stored message found
    it, under the row's lock (None: no touch); SNOOZED means this message woke it.
    """

    chatbot_id: UUID | None
    conversation_id: UUID | None
    message_id: UUID | None
    known_id: UUID | None
    known_conversation_id: UUID | None
    status: str | None = None
    needs_touch: bool = False
    touched_id: UUID | None = None
    has_webhook: bool | None = None
    event_id: UUID | None = None
    touched_status: str | None = None


class Started(NamedTuple):
    """A conversation a start created (``row``, its columns), whether its slug made it
    into the registry, its first message (None: a concurrent delivery stored it), and the
    ids of the events the statement wrote for them (``conversation.created`` then
    ``message.created``; none where it cannot)."""

    row: Row
    slug_registered: bool
    message_id: UUID | None
    announced: tuple[tuple[UUID, EventType], ...] = ()


class ChatSQL:
    """The steps whose SQL differs per engine. Chosen once per engine by
    :func:`noclash.chat.sql.sql_for`; subclasses implement every method.

    ``params`` of :meth:`deliver` and :meth:`start` are the delivery's parameters:
    ``connection``, ``customer`` (the psid), ``platform_message_id``, ``message_id``,
    ``text``, ``sent_at``, ``received_at`` and ``at`` (the message's time); :meth:`start`
    adds the conversation's columns (:data:`CONVERSATION_COLUMNS`) and sets
    ``fallback_slug``.
    """

    # The schema's trigger moves a conversation forward on every message INSERT
    # (noclash.chat.sql.touch), so a statement that stores a message need not.
    messages_move_conversations: ClassVar[bool] = False

    def __init__(self, dialect: Dialect) -> None:
        # The INSERT that knows ON CONFLICT: the statement builders are cached per insert.
        self.insert = dialect.insert

    def claim(self, conn: Connection, values: dict[str, Any]) -> tuple[Row | None, bool]:
        """One statement, two slug attempts (``values["slug"]``, then
        ``values["fallback_slug"]``) and the slug's registry row: ``(row,
        slug_registered)``, or ``(None, False)`` when a unique key said no."""
        raise NotImplementedError

    def deliver(
        self, conn: Connection, params: dict[str, Any], *, exclusive: bool = True
    ) -> Seen | Row | None:
        """Store the message in the active conversation of (connection, customer), deduped
        by ``(connection_id, platform_message_id)``, and move the conversation forward.
        ``exclusive``: the touch must not be skipped (no catch-up can follow). None: the
        connection does not exist."""
        raise NotImplementedError

    def start(
        self, conn: Connection, params: dict[str, Any], candidates: Iterator[str]
    ) -> Started | None:
        """Create a conversation with the message, trying ``params["slug"]`` and then
        further ``candidates``. None: another conversation holds the active key (or the
        slugs tried were taken): deliver again."""
        raise NotImplementedError


__all__ = [
    "ACTIVE_KEY_WHERE",
    "CONVERSATION_COLUMNS",
    "MESSAGE_COLUMNS",
    "ChatSQL",
    "Seen",
    "Started",
    "active_conversation_query",
    "has_webhook",
    "inbound_message",
    "message_select",
    "param",
    "two_attempts",
]
