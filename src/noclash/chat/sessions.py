"""Widget sessions: a visitor's server-made session id, its conversation and its messages.

A session id is a unique key a client must never be able to leave out or choose: a unique
index on a value the client may omit lets the second visitor without one collide on
``null``, and every place that *generates* a missing id is a place that can be bypassed.
Here the rule is one declaration in the schema: ``sessions.session_id`` is ``NOT NULL``
and unique, a UUIDv4 made by the database on PostgreSQL (``gen_random_uuid()``) and by
this module on SQLite, and never read from a request. A missing value is a NOT NULL
error, not a second ``null``.

Starting a session is one transaction:

1. claim-or-create the chatbot's ``widget`` connection with
   :func:`~noclash.unique.insert_or_get` on ``(channel, external_id)``: a thousand first
   visitors racing create exactly one;
2. ``INSERT INTO sessions ... ON CONFLICT (session_id) DO NOTHING RETURNING session_id``:
   the unique index decides; an astronomically unlikely UUID collision is simply another
   attempt with a new value, never an error;
3. create the session's conversation through the same claim as every channel
   (``psid`` = the session id) and link it.

Visitor messages then go through :func:`noclash.chat.inbound.receive_message`, the one
inbound path, so dedupe, lifecycle and ``last_message_at`` are the same as on Messenger.
The widget has no platform payload to parse, so its mapping onto that path is here:

- one ``widget`` connection per chatbot, ``external_id`` = the chatbot's public token;
- the customer (``psid``) is the session id, made by the server;
- the dedupe key is the client's message id *prefixed by the session id*: every session of
  a chatbot shares one connection, and ``(connection_id, platform_message_id)`` is the
  unique key, so an unprefixed ``"1"`` from two visitors would make the second visitor's
  message a "duplicate" of the first's. Without a client id, a server-made UUIDv7 stands
  in (no dedupe asked for, none done).

The visitor's live stream reads the events of this session's conversations only
(:func:`session_events`), in a shape with nothing internal in it (:func:`visitor_event`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.chat import events
from noclash.chat.conversations import insert_conversation
from noclash.chat.errors import NotFound
from noclash.chat.inbound import InboundResult, receive_message
from noclash.db import tables
from noclash.db.dialects import dialect_for
from noclash.db.tables import Channel, chatbots, connections, conversations, messages, sessions
from noclash.db.types import utcnow
from noclash.unique import ClaimNotSettled, insert_or_get, translating, uuid4, uuid7
from noclash.unique.ids import parse_uuid

Row = sa.Row[Any]

CONNECTION_KEY = "uq_connections_channel_external_id"
# A UUIDv4 collision needs ~2^61 sessions for even odds; three attempts is generous.
SESSION_ID_ATTEMPTS = 3
# The dedupe key is "<session id>:<client id>": a 36-character id, a separator and this must
# fit messages.platform_message_id (tests/test_sessions.py checks).
MAX_CLIENT_MESSAGE_ID_LENGTH = 200


def _external_id(public_token: UUID) -> str:
    """The widget connection's ``external_id``: the chatbot's public token."""
    return str(public_token)


def _psid(session_id: UUID) -> str:
    """The visitor's id within the widget connection: the server-made session id."""
    return str(session_id)


def _platform_message_id(session_id: UUID, client_message_id: str | None) -> str:
    """The dedupe key: the client's id scoped to its session, or a fresh server id."""
    if client_message_id is None:
        return f"{session_id}:srv:{uuid7()}"
    return f"{session_id}:{client_message_id}"


@dataclass(frozen=True)
class WidgetSession:
    session_id: UUID
    conversation_id: UUID
    chatbot_id: UUID
    connection_id: UUID


def widget_connection(conn: Connection, chatbot: Row, *, now: datetime | None = None) -> Row:
    """The chatbot's widget connection, created by the first caller that needs it."""
    values = {
        "id": uuid7(),
        "chatbot_id": chatbot.id,
        "channel": Channel.WIDGET,
        "external_id": _external_id(chatbot.public_token),
        "created_at": now or utcnow(),
    }
    row, _created = insert_or_get(conn, connections, values, key=CONNECTION_KEY)
    return row


def _insert_session(
    conn: Connection, chatbot_id: UUID, connection_id: UUID, now: datetime
) -> tuple[UUID, UUID]:
    """Insert a session row; return ``(id, session_id)``. The session id is never an input."""
    dialect = dialect_for(conn)
    for _ in range(SESSION_ID_ATTEMPTS):
        values: dict[str, Any] = {
            "id": uuid7(),
            "chatbot_id": chatbot_id,
            "connection_id": connection_id,
            "created_at": now,
        }
        if not dialect.server_generates_uuid4:
            values["session_id"] = uuid4()
        stmt = (
            dialect.insert(sessions)
            .values(values)
            .on_conflict_do_nothing(index_elements=["session_id"])
            .returning(sessions.c.id, sessions.c.session_id)
        )
        with translating(sessions.metadata):
            row = conn.execute(stmt).first()
        if row is not None:
            return row.id, row.session_id
    raise ClaimNotSettled(f"{SESSION_ID_ATTEMPTS} fresh UUIDv4 session ids all collided")


def start_session(conn: Connection, chatbot: Row, *, now: datetime | None = None) -> WidgetSession:
    """Start a visitor session on ``chatbot`` (in the caller's transaction)."""
    now = now or utcnow()
    connection = widget_connection(conn, chatbot, now=now)
    row_id, session_id = _insert_session(conn, chatbot.id, connection.id, now)
    conversation, created = insert_conversation(
        conn,
        chatbot_id=chatbot.id,
        connection_id=connection.id,
        psid=_psid(session_id),
        now=now,
    )
    if created:
        events.conversation_created(conn, conversation)
    conn.execute(
        sa.update(sessions).where(sessions.c.id == row_id).values(conversation_id=conversation.id)
    )
    return WidgetSession(session_id, conversation.id, chatbot.id, connection.id)


def get_session(conn: Connection, public_token: str, session_id: str) -> Row:
    """The session ``session_id`` of the chatbot with ``public_token``, with the chatbot's
    ``require_auth``. Malformed, unknown or mismatched token or session: NotFound."""
    token, sid = parse_uuid(public_token), parse_uuid(session_id)
    if token is None or sid is None:
        raise NotFound("session not found")
    row = conn.execute(
        sa.select(sessions, chatbots.c.public_token, chatbots.c.require_auth)
        .join(chatbots, chatbots.c.id == sessions.c.chatbot_id)
        .where(sessions.c.session_id == sid, chatbots.c.public_token == token)
    ).first()
    if row is None:
        raise NotFound("session not found")
    return row


def post_message(
    conn: Connection,
    session: Row,
    *,
    text: str,
    client_message_id: str | None = None,
    now: datetime | None = None,
) -> InboundResult:
    """Store a visitor message through the one inbound path; dedupe on the client's id.

    If the session's conversation was closed, the inbound claim opens the visitor's next
    one, and the session follows it so later reads find the live conversation.
    """
    result = receive_message(
        conn,
        connection_id=session.connection_id,
        psid=_psid(session.session_id),
        platform_message_id=_platform_message_id(session.session_id, client_message_id),
        text=text,
        now=now,
    )
    if result.conversation_id != session.conversation_id and not result.duplicate:
        conn.execute(
            sa.update(sessions)
            .where(sessions.c.id == session.id)
            .values(conversation_id=result.conversation_id)
        )
    return result


def _own_conversations(session: Row) -> sa.ScalarSelect[Any]:
    """The ids of every conversation of this session: the visitor is the widget
    connection's ``psid``, whichever of its conversations is the live one now."""
    return (
        sa.select(conversations.c.id)
        .where(
            conversations.c.connection_id == session.connection_id,
            conversations.c.psid == _psid(session.session_id),
        )
        .scalar_subquery()
    )


def list_session_messages(
    conn: Connection, session: Row, *, after: UUID | None = None, limit: int = 50
) -> list[Row]:
    """What the visitor of ``session`` may read: the messages of every conversation of
    this session (the visitor is the widget connection's ``psid``), both directions, in
    order (ids are UUIDv7), after the message ``after``. Nothing of any other visitor."""
    own = _own_conversations(session)
    query = sa.select(
        messages.c.id,
        messages.c.conversation_id,
        messages.c.direction,
        messages.c.text,
        messages.c.created_at,
    ).where(messages.c.conversation_id.in_(own))
    if after is not None:
        query = query.where(messages.c.id > after)
    return list(conn.execute(query.order_by(messages.c.id).limit(limit)))


# What a visitor's stream carries: its conversations' messages and their lifecycle; never
# delivery failures (they name platforms and errors of the chatbot's side).
VISITOR_EVENT_TYPES: tuple[events.EventType, ...] = (
    events.EventType.MESSAGE_CREATED,
    events.EventType.CONVERSATION_CREATED,
    events.EventType.CONVERSATION_STATUS_CHANGED,
)
# A message as the visitor sees it (the same fields as the widget's message list).
VISITOR_MESSAGE_FIELDS = ("id", "conversation_id", "direction", "text", "created_at")


def session_events(session: Row) -> Any:
    """A WHERE clause on events: what the visitor of ``session`` may read live, the
    :data:`VISITOR_EVENT_TYPES` of this session's conversations (a conversation the
    session moves to later is in it too)."""
    return sa.and_(
        tables.events.c.conversation_id.in_(_own_conversations(session)),
        tables.events.c.type.in_([t.value for t in VISITOR_EVENT_TYPES]),
    )


def visitor_event(row: Row) -> dict[str, Any]:
    """An event as a visitor gets it: the envelope without the chatbot, and in ``data``
    only what the visitor's own page shows (a message's id, conversation, direction, text
    and time; a conversation's id and status). No connection, platform id, title, slug or
    delivery error: those belong to the chatbot's owner."""
    payload = row.payload
    data: dict[str, Any] = {}
    if "message" in payload:
        message = payload["message"]
        data["message"] = {f: message.get(f) for f in VISITOR_MESSAGE_FIELDS}
    if "conversation" in payload:
        conversation = payload["conversation"]
        data["conversation"] = {"id": conversation.get("id"), "status": conversation.get("status")}
    for change in ("from", "to"):
        if change in payload:
            data[change] = payload[change]
    envelope = events.envelope(row)
    return {
        "id": envelope["id"],
        "type": envelope["type"],
        "conversation_id": envelope["conversation_id"],
        "created_at": envelope["created_at"],
        "data": data,
    }


__all__ = [
    "MAX_CLIENT_MESSAGE_ID_LENGTH",
    "VISITOR_EVENT_TYPES",
    "WidgetSession",
    "get_session",
    "list_session_messages",
    "post_message",
    "session_events",
    "start_session",
    "visitor_event",
    "widget_connection",
]
