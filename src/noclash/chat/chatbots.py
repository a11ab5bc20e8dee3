"""Chatbots and their public tokens; editing and deleting them.

``public_token`` is a UUIDv4 made by the database on PostgreSQL (``gen_random_uuid()``
default, read back with ``RETURNING``) and by the application on SQLite. There is no
pre-check SELECT: the unique index is the guarantee, and the 122 random bits make the
index practically never fire (a short random string would collide, and a check before the
INSERT would race).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.chat import events, outbox
from noclash.chat.errors import InvalidInput, NotFound
from noclash.db.dialects import dialect_for
from noclash.db.tables import chatbots
from noclash.db.types import utcnow
from noclash.unique import translating, uuid4, uuid7
from noclash.unique.ids import parse_uuid

Row = sa.Row[Any]

# Built once: the values travel as parameters, and SQLAlchemy's compiled cache does the rest.
# Only the value the server makes comes back: every other column is known before the INSERT,
# and reading back the whole row cost more than the uniqueness work (docs/performance.md).
_INSERT_RETURNING_TOKEN = sa.insert(chatbots).returning(chatbots.c.public_token)
_INSERT = sa.insert(chatbots)
_OPTIONAL = frozenset(
    {"slack_channel_id", "asana_project_id", "allowed_origins", "webhook_url", "webhook_events"}
)


@dataclass(frozen=True, slots=True)
class Chatbot:
    """A chatbot as stored; the same attributes as a row read from ``chatbots``."""

    id: UUID
    owner_id: UUID
    name: str
    public_token: UUID
    require_auth: bool
    slack_channel_id: str | None
    asana_project_id: str | None
    created_at: datetime
    allowed_origins: list[str] | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # The types its webhook is sent, a mask (events.webhook_mask); None: every type.
    webhook_events: int | None = None


def create_chatbot(
    conn: Connection,
    *,
    owner_id: UUID,
    name: str,
    slack_channel_id: str | None = None,
    asana_project_id: str | None = None,
    require_auth: bool = False,
    allowed_origins: list[str] | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> Chatbot:
    """Insert a chatbot in one statement and return it as stored.

    On PostgreSQL the token is the column default ``gen_random_uuid()`` and the INSERT
    returns it; on SQLite the application makes it and the INSERT returns nothing.
    Either way the unique index on ``public_token`` is the guarantee: a collision raises
    :class:`noclash.unique.UniqueViolation` naming it, never a generic error.
    """
    values: dict[str, Any] = {
        "id": uuid7(),
        "owner_id": owner_id,
        "name": name,
        "slack_channel_id": slack_channel_id,
        "asana_project_id": asana_project_id,
        "require_auth": require_auth,
        "created_at": utcnow(),
        "allowed_origins": normalise_origins(allowed_origins),
        "webhook_url": webhook_url,
        "webhook_events": events.webhook_mask(webhook_events),
    }
    # Optional settings left out are NULL by the column: no parameter, no JSON encoding.
    given = {k: v for k, v in values.items() if v is not None or k not in _OPTIONAL}
    with translating(chatbots.metadata):
        if dialect_for(conn).server_generates_uuid4:
            values["public_token"] = conn.execute(_INSERT_RETURNING_TOKEN, given).scalar()
        else:
            values["public_token"] = given["public_token"] = uuid4()
            conn.execute(_INSERT, given)
    return Chatbot(**values)


def chatbot_ident(chatbot_id: UUID | str) -> UUID:
    """A chatbot id from a path: a malformed one is NotFound, like a missing chatbot."""
    ident = chatbot_id if isinstance(chatbot_id, UUID) else parse_uuid(chatbot_id)
    if ident is None:
        raise NotFound("chatbot not found")
    return ident


def get_chatbot(conn: Connection, chatbot_id: UUID | str, *, owner_id: UUID) -> Row:
    """The caller's chatbot; another user's or a malformed id is NotFound."""
    ident = chatbot_ident(chatbot_id)
    row = conn.execute(
        sa.select(chatbots).where(chatbots.c.id == ident, chatbots.c.owner_id == owner_id)
    ).first()
    if row is None:
        raise NotFound("chatbot not found")
    return row


def get_chatbot_by_public_token(conn: Connection, public_token: str) -> Row:
    """Public lookup; a malformed token is a miss, never a failed uuid cast."""
    token = parse_uuid(public_token)
    if token is None:
        raise NotFound("chatbot not found")
    row = conn.execute(sa.select(chatbots).where(chatbots.c.public_token == token)).first()
    if row is None:
        raise NotFound("chatbot not found")
    return row


def list_chatbots(conn: Connection, *, owner_id: UUID, after: UUID | None, limit: int) -> list[Row]:
    """Keyset page of the caller's chatbots in creation order (ids are UUIDv7)."""
    query = sa.select(chatbots).where(chatbots.c.owner_id == owner_id)
    if after is not None:
        query = query.where(chatbots.c.id > after)
    return list(conn.execute(query.order_by(chatbots.c.id).limit(limit)))


# Origins a chatbot's widget may be embedded on, at most.
MAX_ORIGINS = 50
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origins(origins: list[str] | None) -> list[str] | None:
    """``allowed_origins`` as stored: each an origin (``https://shop.example``, a port if
    not the scheme's default), lowercase, no path, no duplicates; None for any origin.

    An origin is what a browser sends in ``Origin``, so anything else (a path, a wildcard,
    credentials) could never match and is refused rather than stored silently useless.
    """
    if origins is None:
        return None
    if len(origins) > MAX_ORIGINS:
        raise InvalidInput(f"at most {MAX_ORIGINS} origins", field="allowed_origins")
    out: list[str] = []
    for origin in origins:
        try:
            parsed = urlsplit(origin.strip())
            port = parsed.port
        except ValueError:  # a bracketed host that is no IPv6 address, a port past 65535
            parsed, port = urlsplit(""), -1
        if (
            parsed.scheme not in _DEFAULT_PORTS
            or not parsed.hostname
            or parsed.path not in ("", "/")
            or parsed.query
            or parsed.fragment
            or parsed.username is not None
            or port == -1
        ):
            raise InvalidInput(
                f"{origin!r} is not an origin like https://shop.example[:port]",
                field="allowed_origins",
            )
        host = parsed.hostname.lower()
        host = f"[{host}]" if ":" in host else host
        suffix = f":{port}" if port is not None and port != _DEFAULT_PORTS[parsed.scheme] else ""
        normal = f"{parsed.scheme}://{host}{suffix}"
        if normal not in out:
            out.append(normal)
    return out
# and the creation time are not settings; the webhook secret is made by the server only
# (set_webhook_secret).
# The columns an owner may change. The id, the owner, the public token (widgets embed it)
# and the creation time are not settings.
EDITABLE = frozenset(
    {
        "name",
        "slack_channel_id",
        "asana_project_id",
        "require_auth",
        "webhook_url",
        "webhook_events",
        "allowed_origins",
    }
)


def update_chatbot(
    conn: Connection, chatbot_id: UUID | str, *, owner_id: UUID, changes: dict[str, Any]
) -> Row:
    """Set ``changes`` (a subset of :data:`EDITABLE`) on the caller's chatbot; return it.

    One conditional UPDATE, owner in the WHERE: another user's chatbot is NotFound, like
    one that does not exist. No changes: the chatbot as it is. Removing the
    ``webhook_url`` fails the events still on their way to it, in the same transaction
    (:func:`noclash.chat.outbox.fail_webhook_deliveries`); a new URL gets them instead
    (each attempt reads the URL the chatbot has then). ``webhook_url`` is checked by the
    caller (:func:`noclash.channels.webhooks.check_url`).
    """
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    if "allowed_origins" in changes:
        changes = {**changes, "allowed_origins": normalise_origins(changes["allowed_origins"])}
    if "webhook_events" in changes:
        changes = {**changes, "webhook_events": events.webhook_mask(changes["webhook_events"])}
    if not changes:
        return get_chatbot(conn, chatbot_id, owner_id=owner_id)
    ident = chatbot_ident(chatbot_id)
    with translating(chatbots.metadata):
        row = conn.execute(
            sa.update(chatbots)
            .where(chatbots.c.id == ident, chatbots.c.owner_id == owner_id)
            .values(**changes)
            .returning(*chatbots.c)
        ).first()
    if row is None:
        raise NotFound("chatbot not found")
    if "webhook_url" in changes and changes["webhook_url"] is None:
        outbox.fail_webhook_deliveries(conn, row.id)
    return row


def set_webhook_secret(
    conn: Connection, chatbot_id: UUID | str, *, owner_id: UUID, secret: str
) -> None:
    """Replace the caller's chatbot's webhook secret (made by the caller, shown once).

    Events are signed when each attempt is made, with the secret the chatbot has then: an
    event retried after this is signed with the new secret.
    """
    ident = chatbot_ident(chatbot_id)
    row = conn.execute(
        sa.update(chatbots)
        .where(chatbots.c.id == ident, chatbots.c.owner_id == owner_id)
        .values(webhook_secret=secret)
        .returning(chatbots.c.id)
    ).first()
    if row is None:
        raise NotFound("chatbot not found")


def delete_chatbot(conn: Connection, chatbot_id: UUID | str, *, owner_id: UUID) -> None:
    """Delete the caller's chatbot and everything it holds, in the caller's transaction.

    Its connections, conversations, slugs, messages and widget sessions go with it: the
    schema's ``ON DELETE CASCADE`` removes them in the same statement, so no reader ever
    sees half a chatbot. This is the one delete that destroys history; deleting a
    connection keeps it (:func:`noclash.chat.connections.delete_connection`).
    """
    ident = chatbot_ident(chatbot_id)
    gone = conn.execute(
        sa.delete(chatbots)
        .where(chatbots.c.id == ident, chatbots.c.owner_id == owner_id)
        .returning(chatbots.c.id)
    ).first()
    if gone is None:
        raise NotFound("chatbot not found")
