"""Meta webhooks (Messenger and Instagram): verification, signatures and payloads.

Meta signs every POST with ``X-Hub-Signature-256: sha256=<hex>``, the HMAC-SHA256 of the
*raw* request body under the app secret. The check must run on the bytes as received
(re-serialising parsed JSON changes them) and compare in constant time
(:func:`hmac.compare_digest`), so a forger learns nothing from response timing.

A POST body looks like the documented example::

    {"object": "page",                      # "instagram" for Instagram messaging
     "entry": [{"id": "<PAGE_ID>", "time": 1458692752478,
                "messaging": [{"sender": {"id": "<PSID>"},
                               "recipient": {"id": "<PAGE_ID>"},
                               "timestamp": 1458692752478,
                               "message": {"mid": "mid.1457764197618:41d102a3e1ae206a38",
                                           "text": "hello, world!"}}]}]}

Only customer messages become :class:`InboundEvent` values. Echoes (``is_echo``: our own
outbound messages coming back), deliveries, reads, reactions, postbacks and deleted
messages are acknowledged and ignored, because acknowledging is what stops Meta from
retrying them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from noclash.channels import InboundEvent, PayloadError, json_integer
from noclash.db.tables import Channel

SIGNATURE_HEADER = "X-Hub-Signature-256"
_PREFIX = "sha256="

# Meta's "object" field selects the kind of connection the recipient id is looked up in.
OBJECT_CHANNELS = {"page": Channel.MESSENGER, "instagram": Channel.INSTAGRAM}


def sign(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body`` (used by tests and docs)."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return _PREFIX + digest


def verify_signature(body: bytes, header: str | None, app_secret: str) -> bool:
    """True when ``header`` is the HMAC-SHA256 of the raw ``body`` under ``app_secret``.

    A missing header, another algorithm prefix or malformed hex is simply False. The
    comparison is :func:`hmac.compare_digest` on equal-length ASCII strings.
    """
    if not header or not header.startswith(_PREFIX):
        return False
    expected = sign(body, app_secret)
    try:
        return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii"))
    except UnicodeEncodeError:
        return False


def verify_subscription(params: dict[str, str], verify_token: str | None) -> str | None:
    """The ``hub.challenge`` to echo back, or None if the verification must be refused."""
    if not verify_token or params.get("hub.mode") != "subscribe":
        return None
    given = params.get("hub.verify_token") or ""
    if not hmac.compare_digest(given.encode(), verify_token.encode()):
        return None
    return params.get("hub.challenge")


@dataclass(frozen=True)
class MetaBatch:
    """What a webhook body holds: the channel, the customer messages and how many other
    events were acknowledged without storing anything."""

    channel: str | None
    events: list[InboundEvent]
    ignored: int


def _id(value: Any, where: str) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and value:
        return value
    number = json_integer(value)
    if number is None:
        raise PayloadError(f"{where}.id is missing or not a string")
    return str(number)


def _timestamp(value: Any) -> datetime | None:
    # Meta timestamps are milliseconds since the epoch.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _text(message: dict[str, Any]) -> str:
    text = message.get("text")
    if isinstance(text, str) and text:
        return text
    attachments = message.get("attachments")
    if isinstance(attachments, list) and attachments:
        kinds = sorted(
            {str(a.get("type", "file")) for a in attachments if isinstance(a, dict)}
        ) or ["file"]
        return f"[attachment: {', '.join(kinds)}]"
    return ""


def parse(payload: Any) -> MetaBatch:
    """The customer messages in a Meta webhook body (already JSON-decoded).

    Raises :class:`PayloadError` when the structure is not Meta's, before anything is
    stored: a body is parsed completely first, so a 400 never leaves half a batch behind.
    An ``object`` other than ``page`` or ``instagram`` is acknowledged and ignored.
    """
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object")
    kind = payload.get("object")
    # Any JSON value may stand here: a list or an object is no key (unhashable), just
    # another object that is not ours.
    channel = OBJECT_CHANNELS.get(kind) if isinstance(kind, str) else None
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise PayloadError("entry is missing or not a list")
    if channel is None:
        return MetaBatch(None, [], len(entries))
    events: list[InboundEvent] = []
    ignored = 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PayloadError(f"entry[{i}] is not an object")
        messaging = entry.get("messaging", [])
        if not isinstance(messaging, list):
            raise PayloadError(f"entry[{i}].messaging is not a list")
        # Other keys (standby, changes) belong to apps not in control, or to feeds.
        ignored += sum(len(v) for k, v in entry.items() if k != "messaging" and isinstance(v, list))
        for j, event in enumerate(messaging):
            where = f"entry[{i}].messaging[{j}]"
            if not isinstance(event, dict):
                raise PayloadError(f"{where} is not an object")
            message = event.get("message")
            if not isinstance(message, dict) or message.get("is_echo") or message.get("is_deleted"):
                ignored += 1
                continue
            mid = message.get("mid")
            if not isinstance(mid, str) or not mid:
                raise PayloadError(f"{where}.message.mid is missing")
            recipient = event.get("recipient", entry.get("id"))
            events.append(
                InboundEvent(
                    channel=channel,
                    recipient_id=_id(recipient, f"{where}.recipient"),
                    psid=_id(event.get("sender"), f"{where}.sender"),
                    platform_message_id=mid,
                    text=_text(message),
                    sent_at=_timestamp(event.get("timestamp")),
                )
            )
    return MetaBatch(channel, events, ignored)


__all__ = [
    "OBJECT_CHANNELS",
    "SIGNATURE_HEADER",
    "MetaBatch",
    "parse",
    "sign",
    "verify_signature",
    "verify_subscription",
]
