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

Customer messages become :class:`InboundEvent` values and echoes (``is_echo``: every
message the Page sent, ours and those a person wrote in the Page inbox) become
:class:`Echo` values; a postback (a button tapped) with a ``title`` and ``mid`` is a customer
message too. Deliveries, reads, reactions, older postbacks and deleted messages are
acknowledged and ignored, because acknowledging is what stops Meta from retrying them.

Sending (:class:`MetaSender`) is the Send API, ``POST {graph}/me/messages`` with the Page
access token, ``messaging_type: RESPONSE`` and ``message.metadata`` = the delivery id, which
Meta hands back in the message's echo: that is how an unanswered send is settled without
sending it twice.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from noclash.channels import InboundEvent, PayloadError, json_integer
from noclash.channels.sending import (
    GATEWAY_TIMEOUT,
    REQUEST_TIMEOUT,
    CredentialRejected,
    Outcome,
    Outgoing,
    PlatformUnreachable,
    SendResult,
    gateway_timeout,
    json_body,
    text_refusal,
    transport_result,
)
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
class Echo:
    """A message the Page sent, as Meta reports it back (``message.is_echo``).

    ``page_id`` is our side (the echo's sender), ``psid`` the customer (its recipient).
    ``metadata`` is what the sender put in ``message.metadata``: noclash puts the delivery
    id there, so an echo with it settles that delivery; one without it is a message a
    person sent from the Page inbox, outside noclash.
    """

    channel: str
    page_id: str
    psid: str
    mid: str
    text: str
    metadata: str | None
    app_id: str | None
    sent_at: datetime | None


@dataclass(frozen=True)
class MetaBatch:
    """What a webhook body holds: the channel, the customer messages, the echoes, and how
    many other events were acknowledged without storing anything.

    ``items`` is the customer messages and echoes together, in the body's order: Meta
    batches a conversation's events into one POST (a customer's message, a Page inbox
    answer, the customer's next message), and messages are listed in the order they were
    stored, so they must be stored in the order Meta sent them."""

    channel: str | None
    events: list[InboundEvent]
    ignored: int
    echoes: tuple[Echo, ...] = ()
    items: tuple[InboundEvent | Echo, ...] = ()


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


# What a message Meta cannot show through the API (``is_unsupported``: a GIF or sticker on
# Instagram, a type the API does not carry) or one with no text and no attachment is
# stored as: an empty bubble would hide that the customer sent something.
UNSUPPORTED_TEXT = "[unsupported message]"


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
    return UNSUPPORTED_TEXT


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
    items: list[InboundEvent | Echo] = []
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
            if message is None and isinstance(event.get("postback"), dict):
                postback = _postback(channel, entry, event, where)
                if postback is None:
                    ignored += 1
                else:
                    items.append(postback)
                continue
            if not isinstance(message, dict) or message.get("is_deleted"):
                ignored += 1
                continue
            mid = message.get("mid")
            if not isinstance(mid, str) or not mid:
                raise PayloadError(f"{where}.message.mid is missing")
            if message.get("is_echo"):
                items.append(_echo(channel, event, message, mid, where))
                continue
            recipient = event.get("recipient", entry.get("id"))
            items.append(
                InboundEvent(
                    channel=channel,
                    recipient_id=_id(recipient, f"{where}.recipient"),
                    psid=_id(event.get("sender"), f"{where}.sender"),
                    platform_message_id=mid,
                    text=_text(message),
                    sent_at=_timestamp(event.get("timestamp")),
                )
            )
    events = [item for item in items if isinstance(item, InboundEvent)]
    echoes = tuple(item for item in items if isinstance(item, Echo))
    return MetaBatch(channel, events, ignored, echoes, tuple(items))


def _postback(channel: str, entry: dict, event: dict, where: str) -> InboundEvent | None:
    """A tap on a button (Get Started, a persistent menu item, a template's button, an
    Instagram ice breaker) as the customer's message: its ``title``, the words the
    customer chose, often their first question; deduplicated by its ``mid`` like a
    message. None for a postback without both (older payloads had neither): nothing to
    show, and nothing to deduplicate it by."""
    postback = event["postback"]
    title, mid = postback.get("title"), postback.get("mid")
    if not (isinstance(title, str) and title and isinstance(mid, str) and mid):
        return None
    return InboundEvent(
        channel=channel,
        recipient_id=_id(event.get("recipient", entry.get("id")), f"{where}.recipient"),
        psid=_id(event.get("sender"), f"{where}.sender"),
        platform_message_id=mid,
        text=title,
        sent_at=_timestamp(event.get("timestamp")),
    )


def _echo(channel: str, event: dict, message: dict, mid: str, where: str) -> Echo:
    metadata = message.get("metadata")
    app_id = message.get("app_id")
    return Echo(
        channel=channel,
        page_id=_id(event.get("sender"), f"{where}.sender"),
        psid=_id(event.get("recipient"), f"{where}.recipient"),
        mid=mid,
        text=_text(message),
        metadata=metadata if isinstance(metadata, str) and metadata else None,
        app_id=str(app_id)
        if isinstance(app_id, str | int) and not isinstance(app_id, bool)
        else None,
        sent_at=_timestamp(event.get("timestamp")),
    )


# -- sending ------------------------------------------------------------------------------
# Graph API error codes (https://developers.facebook.com/docs/messenger-platform/error-codes).
# Rate limits: application (4), user (17), page (32), and "calls to this api" (613).
# Business use case rate limits, answered with HTTP 400: Pages (80001), Instagram
# (80002), Messenger (80006).
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80001, 80002, 80006})
# Refused for good: permission (10), invalid parameter (100), invalid token (190),
# permissions (200), the person is not available (551).
PERMANENT_CODES = frozenset({10, 100, 190, 200, 551})
# Meta's own transient errors: unknown (1), service temporarily unavailable (2), and the
# Send API's "Temporary send message failure. Please try again later." (1200), which
# comes as an HTTP 400 without is_transient: it was failed for good at the first attempt.
TRANSIENT_CODES = frozenset({1, 2, 1200})


def _error(response: httpx.Response) -> tuple[int | None, str]:
    error = json_body(response).get("error")
    if not isinstance(error, dict):
        return None, f"HTTP {response.status_code} from Meta"
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    subcode = error.get("error_subcode")
    message = str(error.get("message") or "no message")
    detail = f"Meta error {code}" + (f"/{subcode}" if subcode else "") + f": {message}"
    return code, detail


def send_result(response: httpx.Response, *, rate_limit_seconds: float) -> SendResult:
    """Classify the Send API's answer (see :mod:`noclash.channels.sending`)."""
    if response.is_success:
        mid = json_body(response).get("message_id")
        if isinstance(mid, str) and mid:
            return SendResult(Outcome.SENT, platform_message_id=mid)
        return SendResult(Outcome.AMBIGUOUS, error="Meta answered without a message_id")
    code, detail = _error(response)
    status = response.status_code
    if code in RATE_LIMIT_CODES or status == 429:
        return SendResult(Outcome.RETRY, error=detail, retry_after=rate_limit_seconds)
    if code in PERMANENT_CODES:
        return SendResult(Outcome.FAILED, error=detail)
    if status == GATEWAY_TIMEOUT:
        return gateway_timeout(detail)
    if code in TRANSIENT_CODES or status >= 500 or status == REQUEST_TIMEOUT:
        return SendResult(Outcome.RETRY, error=detail)
    error = json_body(response).get("error")
    if not isinstance(error, dict):
        # Not the Graph API's answer (it always names its error): a proxy's page. Sent
        # again, up to the last attempt, rather than given up on at the first.
        return SendResult(Outcome.RETRY, error=detail)
    transient = error.get("is_transient") is True
    return SendResult(Outcome.RETRY if transient else Outcome.FAILED, error=detail)


@dataclass(frozen=True)
class MetaSender:
    """Messenger or Instagram through the Graph API (``graph_url`` carries the version)."""

    channel: Channel
    graph_url: str
    rate_limit_seconds: float = 60.0
    confirms_by_echo: bool = True

    async def send(self, client: httpx.AsyncClient, message: Outgoing) -> SendResult:
        """The Send API; a text longer than the platform carries (2000 characters on
        Messenger, 1000 bytes on Instagram) fails at once, unasked: Meta refuses it on
        every attempt."""
        refusal = text_refusal(self.channel, message.text)
        if refusal is not None:
            return SendResult(Outcome.FAILED, error=f"not sent: {refusal}")
        body = {
            "recipient": {"id": message.recipient},
            "messaging_type": "RESPONSE",
            "message": {"text": message.text, "metadata": message.delivery_id},
        }
        try:
            response = await client.post(
                f"{self.graph_url}/me/messages",
                json=body,
                headers={"Authorization": f"Bearer {message.access_token}"},
            )
        except httpx.HTTPError as exc:
            return transport_result(exc)
        return send_result(response, rate_limit_seconds=self.rate_limit_seconds)

    async def owned_id(self, client: httpx.AsyncClient, *, access_token: str) -> str:
        """The Page id the token belongs to, or for Instagram the Page's
        ``instagram_business_account.id``."""
        fields = "id,instagram_business_account" if self.channel == Channel.INSTAGRAM else "id"
        try:
            response = await client.get(
                f"{self.graph_url}/me",
                params={"fields": fields},
                headers={"Authorization": f"Bearer {access_token}"},
            )
        except httpx.TransportError as exc:
            raise PlatformUnreachable(f"Meta could not be reached: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise PlatformUnreachable(f"Meta answered HTTP {response.status_code}")
        if not response.is_success:
            raise CredentialRejected(_error(response)[1])
        body = json_body(response)
        if self.channel == Channel.INSTAGRAM:
            account = body.get("instagram_business_account")
            owned = account.get("id") if isinstance(account, dict) else None
            if owned is None:
                raise CredentialRejected("the token's Page has no Instagram business account")
        else:
            owned = body.get("id")
        if not isinstance(owned, str | int) or isinstance(owned, bool):
            raise CredentialRejected("Meta did not say whose token this is")
        return str(owned)


__all__ = [
    "OBJECT_CHANNELS",
    "PERMANENT_CODES",
    "RATE_LIMIT_CODES",
    "SIGNATURE_HEADER",
    "Echo",
    "MetaBatch",
    "MetaSender",
    "parse",
    "send_result",
    "sign",
    "verify_signature",
    "verify_subscription",
]
