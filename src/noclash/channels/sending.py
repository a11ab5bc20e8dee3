"""What a platform said to a send, and to a credential: the adapters' common answers.

A send has four outcomes, and the difference between the last two is the whole reason
this module exists:

- ``SENT``: the platform accepted the message and named it (its message id);
- ``RETRY``: it was *not* delivered and may be sent again later (a 5xx, a rate limit, a
  connection that never opened); ``retry_after`` is the wait the platform asked for;
- ``FAILED``: it was not delivered and sending it again cannot help (the customer cannot
  be reached, the token is invalid, the request is refused);
- ``AMBIGUOUS``: the request went out and no answer came back (a read timeout, a dropped
  connection). The platform may have delivered it. What to do next is the platform's
  policy (:attr:`Sender.confirms_by_echo`): Meta echoes every message it delivers, so the
  dispatcher waits for the echo; Telegram has no echo and no idempotency key, so the
  delivery becomes ``unknown`` and is sent again only when someone asks.

Transport errors are classified here once, by when they happened: before the request
was sent (:class:`httpx.ConnectError`, :class:`httpx.ConnectTimeout`, a pool timeout) is
a ``RETRY``; after it (a read timeout, a protocol error, a reset, an answer whose body
cannot be decoded) is ``AMBIGUOUS``. So is a gateway's 504 (:func:`gateway_timeout`): the
gateway gave up waiting for a platform that may have processed the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import httpx

from noclash.db.tables import Channel


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    platform_message_id: str | None = None
    error: str | None = None
    # Seconds the platform asked us to wait (Telegram's parameters.retry_after), or a floor
    # for its rate limits (Meta names none).
    retry_after: float | None = None
    # The HTTP status the other side answered (None: no answer), where a caller shows it
    # (a webhook's ping).
    status_code: int | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send: the credential, the customer, the text, and the delivery's id
    (Meta hands it back in the echo; Telegram has nowhere to carry it)."""

    access_token: str
    recipient: str
    text: str
    delivery_id: str


class CredentialRejected(Exception):
    """The platform refused the access token, or it belongs to another account."""


class PlatformUnreachable(Exception):
    """The platform could not be asked (a network error, a timeout, a 5xx)."""


class Sender(Protocol):
    """A platform's outbound adapter."""

    channel: Channel
    # The platform reports every message it delivered back to us (Meta's message echoes),
    # so an AMBIGUOUS send can be settled by waiting instead of by sending again.
    confirms_by_echo: bool

    async def send(self, client: httpx.AsyncClient, message: Outgoing) -> SendResult: ...

    async def owned_id(self, client: httpx.AsyncClient, *, access_token: str) -> str:
        """The platform id the token belongs to (a Page, an Instagram account, a bot);
        raises CredentialRejected or PlatformUnreachable."""
        ...


# The longest text each platform carries in one message, as it counts it: Messenger 2000
# characters, Instagram 1000 bytes of UTF-8 (a 400-character reply in Japanese is over),
# Telegram 4096 characters after entities parsing, counted in UTF-16 code units (an emoji
# outside the BMP is two). A longer reply is refused by the platform, every time.
TEXT_LIMITS: dict[str, tuple[int, str]] = {
    Channel.MESSENGER: (2000, "characters"),
    Channel.INSTAGRAM: (1000, "bytes of UTF-8"),
    Channel.TELEGRAM: (4096, "UTF-16 code units"),
}
_PLATFORM_NAMES = {
    Channel.MESSENGER: "Messenger", Channel.INSTAGRAM: "Instagram", Channel.TELEGRAM: "Telegram"
}  # fmt: skip


def _measure(text: str, unit: str) -> int:
    if unit == "bytes of UTF-8":
        return len(text.encode("utf-8", "surrogatepass"))
    if unit == "UTF-16 code units":
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    return len(text)


def text_refusal(channel: str, text: str) -> str | None:
    """Why ``channel`` can never carry ``text`` in one message (it is longer than the
    platform's limit, :data:`TEXT_LIMITS`), or None. A sender fails such a reply at once,
    without asking the platform and without retries; the API can refuse it when it is
    written (a 422 naming ``text``) with the same words."""
    limit = TEXT_LIMITS.get(channel)
    if limit is None:
        return None
    most, unit = limit
    size = _measure(text, unit)
    if size <= most:
        return None
    name = _PLATFORM_NAMES.get(channel, channel)
    return (
        f"text is {size} {unit}, longer than the {most} a {name} message carries: "
        "shorten it or send it as several replies"
    )


# A proxy's or gateway's answer that says nothing of what the platform did.
GATEWAY_TIMEOUT = 504
# The server timed the request out before it was processed.
REQUEST_TIMEOUT = 408


def gateway_timeout(detail: str) -> SendResult:
    """A 504: the gateway stopped waiting, not the platform processing."""
    return SendResult(
        Outcome.AMBIGUOUS,
        error=f"{detail}: a gateway gave up waiting, the platform may have processed it",
    )


def transport_result(exc: httpx.HTTPError) -> SendResult:
    """The outcome of a request that got no usable HTTP answer, by when it failed."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return SendResult(Outcome.RETRY, error=f"could not connect: {type(exc).__name__}")
    return SendResult(
        Outcome.AMBIGUOUS,
        error=f"no answer after the request was sent ({type(exc).__name__})",
    )


def json_body(response: httpx.Response) -> dict:
    """The response's JSON object, or ``{}`` when it is not one (a proxy's HTML page)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


__all__ = [
    "GATEWAY_TIMEOUT",
    "REQUEST_TIMEOUT",
    "TEXT_LIMITS",
    "CredentialRejected",
    "Outcome",
    "Outgoing",
    "PlatformUnreachable",
    "SendResult",
    "Sender",
    "gateway_timeout",
    "json_body",
    "text_refusal",
    "transport_result",
]
