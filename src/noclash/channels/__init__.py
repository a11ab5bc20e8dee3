"""Channel adapters: the platforms' payload formats and signatures, as pure functions.

Each adapter turns a platform's webhook body into :class:`InboundEvent` values and checks
the platform's authentication (an HMAC, a shared secret) in constant time. They do no I/O:
the routes in :mod:`noclash.api.routes.webhooks` verify, parse, then hand every event to
the one inbound path, :func:`noclash.chat.inbound.receive_message`, which is the same for
every channel. Keeping parsing pure lets the tests feed the platforms' documented examples
straight in, and keeps every channel's dedupe and lifecycle rules in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class InboundEvent:
    """One customer message, as any channel delivers it.

    ``recipient_id`` is the platform id of *our* side (page id, Instagram account id, bot
    id): it selects the connection. ``psid`` identifies the customer within that
    connection, and ``platform_message_id`` is the platform's own message id, the dedupe
    key of redelivered webhooks.
    """

    channel: str
    recipient_id: str | None
    psid: str
    platform_message_id: str
    text: str
    sent_at: datetime | None = None
    username: str | None = None


class PayloadError(ValueError):
    """The body is not the platform's format (answered 400; nothing is stored)."""


def json_integer(value: Any) -> int | None:
    """``value`` as a JSON integer, or None. JSON has numbers, not ints and floats: ``1``
    and ``1.0`` are the same number, an integer to JSON Schema (and to the OpenAPI document
    that describes the webhook bodies), so an integral float counts; ``true`` does not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


__all__ = ["InboundEvent", "PayloadError", "json_integer"]
