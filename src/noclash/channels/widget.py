"""The web widget as a channel: pure mapping from a widget request to an inbound event.

Unlike the platforms, the widget has no webhook payload to parse or signature to check: a
visitor's browser posts ``{text, client_message_id?}`` to its session. What this adapter
decides is how that becomes an :class:`~noclash.channels.InboundEvent`:

- one ``widget`` connection per chatbot, ``external_id`` = the chatbot's public token;
- the customer (``psid``) is the session id, made by the server;
- the dedupe key is the client's message id *prefixed by the session id*: every session of
  a chatbot shares one connection, and ``(connection_id, platform_message_id)`` is the
  unique key, so an unprefixed ``"1"`` from two visitors would make the second visitor's
  message a "duplicate" of the first's. Without a client id, a server-made UUIDv7 stands
  in (no dedupe asked for, none done).
"""

from __future__ import annotations

from uuid import UUID

from noclash.channels import InboundEvent
from noclash.unique import uuid7

CHANNEL = "widget"
# platform_message_id holds 300 characters: a 36-character session id, a separator, this.
MAX_CLIENT_MESSAGE_ID_LENGTH = 200


def external_id(public_token: UUID) -> str:
    """The widget connection's ``external_id``: the chatbot's public token."""
    return str(public_token)


def psid(session_id: UUID) -> str:
    """The visitor's id within the widget connection: the server-made session id."""
    return str(session_id)


def platform_message_id(session_id: UUID, client_message_id: str | None) -> str:
    """The dedupe key: the client's id scoped to its session, or a fresh server id."""
    if client_message_id is None:
        return f"{session_id}:srv:{uuid7()}"
    return f"{session_id}:{client_message_id}"


def event(
    session_id: UUID, public_token: UUID, text: str, client_message_id: str | None
) -> InboundEvent:
    """The visitor's message as the event every channel hands to the inbound path."""
    return InboundEvent(
        channel=CHANNEL,
        recipient_id=external_id(public_token),
        psid=psid(session_id),
        platform_message_id=platform_message_id(session_id, client_message_id),
        text=text,
    )


__all__ = [
    "CHANNEL",
    "MAX_CLIENT_MESSAGE_ID_LENGTH",
    "event",
    "external_id",
    "platform_message_id",
    "psid",
]
