"""Telegram Bot API webhooks: the secret token and the ``Update`` object.

``setWebhook(secret_token=...)`` makes Telegram send that token in the
``X-Telegram-Bot-Api-Secret-Token`` header of every update; it is the connection's
``secret``, compared in constant time. Telegram has no body signature, so the secret plus
the per-connection URL (``/webhooks/telegram/{connection_id}``) is the authentication.

An update with a message, as documented::

    {"update_id": 10000,
     "message": {"message_id": 1365, "date": 1441645532,
                 "chat": {"id": 1111111, "type": "private", "first_name": "Test"},
                 "from": {"id": 1111111, "is_bot": false, "first_name": "Test",
                          "username": "Test"},
                 "text": "/start"}}

The customer is the chat (``psid = str(chat.id)``), and the dedupe key is ``update_id``:
Telegram redelivers the same update with the same id until it gets a 2xx. Other update
kinds (edited messages, callback queries, channel posts, member updates) are acknowledged
and ignored.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

from noclash.channels import InboundEvent, PayloadError, json_integer
from noclash.db.tables import Channel

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def verify_secret(header: str | None, secret: str | None) -> bool:
    """True when the header equals the connection's secret (constant-time compare)."""
    if not header or not secret:
        return False
    return hmac.compare_digest(header.encode(), secret.encode())


def _text(message: dict[str, Any]) -> str:
    for key in ("text", "caption"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    for kind in ("photo", "document", "voice", "video", "audio", "sticker", "location"):
        if kind in message:
            return f"[attachment: {kind}]"
    return ""


def _username(message: dict[str, Any]) -> str | None:
    sender = message.get("from")
    if not isinstance(sender, dict):
        return None
    if isinstance(sender.get("username"), str):
        return sender["username"]
    names = [sender.get(k) for k in ("first_name", "last_name")]
    joined = " ".join(n for n in names if isinstance(n, str) and n)
    return joined or None


def parse(update: Any) -> InboundEvent | None:
    """The customer message in ``update``, or None for update kinds that carry none.

    Raises :class:`PayloadError` when the body is not an ``Update``.
    """
    if not isinstance(update, dict):
        raise PayloadError("the body is not a JSON object")
    update_id = json_integer(update.get("update_id"))
    if update_id is None:
        raise PayloadError("update_id is missing or not an integer")
    message = update.get("message")
    if message is None:
        return None
    if not isinstance(message, dict):
        raise PayloadError("message is not an object")
    chat = message.get("chat")
    chat_id = json_integer(chat.get("id")) if isinstance(chat, dict) else None
    if chat_id is None:
        raise PayloadError("message.chat.id is missing or not an integer")
    return InboundEvent(
        channel=Channel.TELEGRAM,
        recipient_id=None,
        psid=str(chat_id),
        platform_message_id=str(update_id),
        text=_text(message),
        sent_at=_date(message.get("date")),
        username=_username(message),
    )


def _date(value: Any) -> datetime | None:
    """A Unix time in seconds, or None: a value that is not one, or has no date (out of the
    calendar or of the platform's time_t), is no reason to refuse the message."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


__all__ = ["SECRET_HEADER", "parse", "verify_secret"]
