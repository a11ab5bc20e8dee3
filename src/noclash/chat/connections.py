"""Connections: one chatbot's presence on one channel.

A connection is ``(channel, external_id)``: the Messenger page id, the Instagram account
id, the Telegram bot id, or the widget's public token. Conversations point at it with one
``connection_id`` rather than a nullable column per platform (``pageConnectionId``,
``instagramConnectionId``, ...), so one partial unique index covers every channel: an
index per platform column would miss the other platforms' rows.

``(channel, external_id)`` is unique in the database for the platforms: a second
connection for the same page is rejected by the index (a
:class:`~noclash.unique.UniqueViolation`, answered 409 naming ``channel, external_id``),
with no SELECT before the INSERT. A ``custom`` channel's ``external_id`` is a name its
owner chose, unique per chatbot (``uq_connections_chatbot_id_external_id_custom``), so
that one tenant's names never block another's.

Deleting a connection keeps the history a team relies on (:func:`delete_connection`).
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from noclash.chat import events, outbox
from noclash.chat.chatbots import get_chatbot
from noclash.chat.errors import Conflict, InvalidInput, NotFound
from noclash.db.dialects import dialect_for
from noclash.db.tables import (
    ACTIVE_STATUSES,
    CHANNELS,
    SENDING_CHANNELS,
    Channel,
    DeliveryStatus,
    Status,
    chatbots,
    connections,
    conversations,
    deliveries,
    messages,
)
from noclash.db.types import utcnow
from noclash.unique import ClaimNotSettled, translating, uuid7
from noclash.unique.ids import parse_uuid

Row = sa.Row[Any]

# Rounds of delete_connection's locks before it gives up (503); each is milliseconds.
DELETE_ATTEMPTS = 20
# Channels whose webhook is authenticated by the connection's own secret.
SECRET_REQUIRED = frozenset({Channel.TELEGRAM})
# What the platform accepts as that secret. Telegram's setWebhook takes a secret_token of
# "1-256 characters. Only characters A-Z, a-z, 0-9, _ and - are allowed": any other is
# refused there, so a connection stored with one could never receive an update.
SECRET_SHAPES = {
    Channel.TELEGRAM: (
        re.compile(r"[A-Za-z0-9_-]{1,256}"),
        "1 to 256 characters, each a letter A-Z or a-z, a digit, _ or - "
        "(what Telegram's setWebhook accepts as secret_token)",
    )
}


def create_connection(
    conn: Connection,
    *,
    chatbot_id: UUID | str,
    owner_id: UUID,
    channel: str,
    external_id: str,
    secret: str | None = None,
    access_token: str | None = None,
) -> Row:
    """Connect the caller's chatbot to ``channel``; return the stored row.

    Another user's chatbot is NotFound. A Telegram connection needs a ``secret`` (the
    ``secret_token`` given to ``setWebhook``): without it its webhook could not be
    authenticated at all. A widget connection's ``external_id`` is its own chatbot's
    public token and nothing else: naming another chatbot's would route that chatbot's
    visitors here. An ``access_token`` belongs to a sending channel only; the caller has
    proven it owns ``external_id`` (:mod:`noclash.api.routes.connections`).
    """
    if channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    if channel in SECRET_REQUIRED and not secret:
        raise InvalidInput(f"a {channel} connection needs a secret", field="secret")
    _check_secret(channel, secret)
    _check_access_token(channel, access_token)
    bot = get_chatbot(conn, chatbot_id, owner_id=owner_id)
    if channel == Channel.WIDGET and external_id != str(bot.public_token):
        raise InvalidInput(
            "a widget connection's external_id is its chatbot's own public_token",
            field="external_id",
        )
    values = {
        "id": uuid7(),
        "chatbot_id": bot.id,
        "channel": channel,
        "external_id": external_id,
        "secret": secret,
        "access_token": access_token,
        "created_at": utcnow(),
    }
    with translating(connections.metadata):
        return conn.execute(sa.insert(connections).values(values).returning(*connections.c)).one()


def secret_refusal(channel: str, secret: str | None) -> str | None:
    """Why ``channel``'s platform would refuse ``secret`` (:data:`SECRET_SHAPES`), or None."""
    shape = SECRET_SHAPES.get(channel)
    if secret is not None and shape is not None and not shape[0].fullmatch(secret):
        return f"a {channel} connection's secret must be {shape[1]}"
    return None


def _check_secret(channel: str, secret: str | None) -> None:
    why = secret_refusal(channel, secret)
    if why is not None:
        raise InvalidInput(why, field="secret")


def _check_access_token(channel: str, access_token: str | None) -> None:
    if access_token is not None and channel not in SENDING_CHANNELS:
        raise InvalidInput(
            f"a {channel} connection sends nothing to a platform and takes no access_token",
            field="access_token",
        )


# Fields of a connection that its owner may change (PATCH): the credentials. The channel
# and external_id are what the connection *is*; another page is another connection.
UPDATABLE = ("access_token", "secret")


def update_connection(
    conn: Connection, connection_id: UUID | str, *, owner_id: UUID, changes: dict[str, Any]
) -> Row:
    """Set or clear (``None``) the caller's connection's ``access_token`` and ``secret``.

    Only the keys present in ``changes`` change. A Telegram connection keeps a secret (its
    webhook's only authentication). A new access token has been proven to own the
    connection's ``external_id`` by the caller.
    """
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(sorted(unknown))}", field=min(unknown))
    row = get_connection(conn, connection_id, owner_id=owner_id)
    if "access_token" in changes:
        _check_access_token(row.channel, changes["access_token"])
    if "secret" in changes and changes["secret"] is None and row.channel in SECRET_REQUIRED:
        raise InvalidInput(f"a {row.channel} connection needs a secret", field="secret")
    if "secret" in changes and (why := secret_refusal(row.channel, changes["secret"])):
        # A conflict with what the connection is (its channel), which the request's schema
        # cannot know: the same secret is fine on a widget or custom connection.
        raise Conflict(why, fields=("secret",), channel=row.channel)
    if not changes:
        return row
    updated = conn.execute(
        sa.update(connections)
        .where(connections.c.id == row.id)
        .values(**changes)
        .returning(*connections.c)
    ).first()
    if updated is None:  # deleted meanwhile
        raise NotFound("connection not found")
    return updated


def _owned() -> sa.Select[Any]:
    return sa.select(connections).join(chatbots, chatbots.c.id == connections.c.chatbot_id)


def get_connection(
    conn: Connection, connection_id: UUID | str, *, owner_id: UUID, hold: bool = False
) -> Row:
    """The caller's connection; another user's or a malformed id is NotFound. ``hold``:
    locked ``FOR KEY SHARE`` (PostgreSQL) until the caller's transaction ends, so that it
    is not deleted under work that relies on it."""
    ident = connection_id if isinstance(connection_id, UUID) else parse_uuid(connection_id)
    if ident is None:
        raise NotFound("connection not found")
    query = _owned().where(connections.c.id == ident, chatbots.c.owner_id == owner_id)
    if hold:
        query = query.with_for_update(of=connections, read=True, key_share=True)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound("connection not found")
    return row


def retry_failed_sends(
    conn: Connection,
    connection_id: UUID | str,
    *,
    owner_id: UUID,
    since: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Queue again, due now with a fresh count of attempts, every ``failed`` delivery of
    the caller's connection (that failed at or after ``since``, when given): after a
    platform outage outlasted the retries, or once a revoked token was replaced. One
    UPDATE, fenced by the status, so concurrent calls (and single retries) queue each
    delivery once. ``unknown`` ones stay: the customer may have them, and only a person
    who checked should send them again (``POST /api/messages/{id}/retry``). How many were
    queued.

    A connection that sends nothing (the widget, a custom integration) or has no access
    token is a 409 naming ``channel`` or ``access_token``: everything would fail again.
    The connection is held ``FOR KEY SHARE`` so that a concurrent delete waits; the
    deliveries queued then fail as the connection's deliveries do when it is deleted.
    """
    now = now or utcnow()
    connection = get_connection(conn, connection_id, owner_id=owner_id, hold=True)
    if connection.channel not in SENDING_CHANNELS:
        raise Conflict(
            f"a {connection.channel} connection sends nothing to a platform", fields=("channel",)
        )
    if not connection.access_token:
        raise Conflict(
            "the connection has no access_token: set one (PATCH) before sending again",
            fields=("access_token",),
        )
    where = [
        deliveries.c.connection_id == connection.id,
        deliveries.c.destination == connection.channel,
        deliveries.c.status == DeliveryStatus.FAILED,
    ]
    if since is not None:
        where.append(deliveries.c.updated_at >= since)
    requeued = len(
        conn.execute(
            sa.update(deliveries)
            .where(*where)
            .values(**outbox.requeued(now))
            .returning(deliveries.c.id)
        ).all()
    )
    if requeued:
        events.queued_delivery()
    return requeued


def list_connections(
    conn: Connection, *, chatbot_id: UUID | str, owner_id: UUID, after: UUID | None, limit: int
) -> list[Row]:
    """Keyset page of one of the caller's chatbots' connections, in creation order."""
    bot = get_chatbot(conn, chatbot_id, owner_id=owner_id)
    query = sa.select(connections).where(connections.c.chatbot_id == bot.id)
    if after is not None:
        query = query.where(connections.c.id > after)
    return list(conn.execute(query.order_by(connections.c.id).limit(limit)))


def find_connection(conn: Connection, channel: str, external_id: str) -> Row | None:
    """Webhook routing: the connection for a platform recipient id (unique by index)."""
    return conn.execute(
        sa.select(connections).where(
            connections.c.channel == channel, connections.c.external_id == external_id
        )
    ).first()


def connection_by_id(conn: Connection, connection_id: UUID | str) -> Row | None:
    """Webhook routing by URL (Telegram): no owner, the channel secret authenticates."""
    ident = connection_id if isinstance(connection_id, UUID) else parse_uuid(connection_id)
    if ident is None:
        return None
    return conn.execute(sa.select(connections).where(connections.c.id == ident)).first()


def delete_connection(
    conn: Connection, connection_id: UUID | str, *, owner_id: UUID, now: datetime | None = None
) -> None:
    """Delete the caller's connection, keeping its conversations and messages.

    In the caller's transaction: its active conversations are closed, every conversation
    and message of it is detached (``connection_id`` NULL, the customer's ``psid`` kept),
    then the connection goes, and with it only what cannot outlive it: its widget
    sessions. The schema's ``ON DELETE CASCADE`` would delete the history; detaching
    first leaves it nothing to cascade to. A detached conversation is an unconnected one
    (``uq_conversations_active_unconnected_chatbot_id_psid`` governs a reopen).

    Locks (PostgreSQL). A delivery locks its conversation first and the connection last
    (its message's foreign key check, at the end of its statement), so the delete takes
    them in the same order, in a SAVEPOINT:

    1. the connection's active conversations ``FOR UPDATE``: deliveries into them finish
       first, later ones wait and then find them closed;
    2. the connection ``FOR UPDATE``: deliveries that start a new conversation meanwhile
       finish first; any later one finds the connection gone (a 404);
    3. the active conversations again, ``NOWAIT``: one started between 1 and 2 may now be
       touched by a delivery that waits for step 2's lock. Waiting for it would deadlock,
       so the attempt is undone (releasing the connection) and made again, which then
       finds that conversation at step 1.

    Then, holding every lock a delivery could need, the UPDATEs and the DELETE cannot wait
    on one. A connection that keeps getting conversations started after
    ``DELETE_ATTEMPTS`` attempts raises :class:`~noclash.unique.ClaimNotSettled` (503:
    retry). SQLite's one writer at a time makes every attempt the first.
    """
    now = now or utcnow()
    ident = connection_id if isinstance(connection_id, UUID) else parse_uuid(connection_id)
    if ident is None:
        raise NotFound("connection not found")
    owned = _owned().where(connections.c.id == ident, chatbots.c.owner_id == owner_id)
    if conn.execute(owned).first() is None:
        raise NotFound("connection not found")
    active = sa.and_(
        conversations.c.connection_id == ident, conversations.c.status.in_(ACTIVE_STATUSES)
    )
    lock_active = sa.select(conversations.c.id).where(active)
    dialect = dialect_for(conn)
    for attempt in range(DELETE_ATTEMPTS):
        try:
            with conn.begin_nested():
                conn.execute(lock_active.with_for_update())
                if conn.execute(owned.with_for_update(of=connections)).first() is None:
                    raise NotFound("connection not found")  # a concurrent delete won
                conn.execute(lock_active.with_for_update(nowait=True))
                _detach_and_delete(conn, ident, active, now)
            return
        except DBAPIError as exc:
            if not dialect.is_lock_timeout(exc.orig):
                raise
            time.sleep(0.005 * (attempt + 1))
    raise ClaimNotSettled(f"connection {ident} kept getting new conversations while deleted")


def _detach_and_delete(conn: Connection, ident: UUID, active: Any, now: datetime) -> None:
    for before in ACTIVE_STATUSES:
        closed = conn.execute(
            sa.update(conversations)
            .where(active, conversations.c.status == before)
            .values(status=Status.CLOSED, closed_at=now, snoozed_until=None)
            .returning(conversations.c.id)
        )
        events.statuses_changed(conn, [row.id for row in closed], before)
    conn.execute(
        sa.update(conversations)
        .where(conversations.c.connection_id == ident)
        .values(connection_id=None)
    )
    conn.execute(
        sa.update(messages).where(messages.c.connection_id == ident).values(connection_id=None)
    )
    conn.execute(sa.delete(connections).where(connections.c.id == ident))
