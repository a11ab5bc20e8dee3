"""Webhooks to bots: where a chatbot's events may go, how they are signed, how they are sent.

A chatbot's owner names a URL (``webhook_url``) and noclash POSTs each of the chatbot's
events to it (:mod:`noclash.chat.events`), from a dispatcher inside the operator's network.
Three rules, each kept here and nowhere else:

1. **Where** (server-side request forgery). The URL is the owner's choice, the request
   noclash's: without a rule, ``http://169.254.169.254/`` would have noclash read the
   cloud's metadata for anyone who can create a chatbot. A webhook URL is http or https,
   carries no credentials, and names a host whose *every* address is public: not
   loopback, private, shared (100.64/10), link-local, multicast, reserved or unspecified,
   in whatever form (an IPv4-mapped or NAT64 IPv6 address, a decimal ``2130706433``, a
   name that resolves to one). The API checks when the URL is set (:func:`check_url`,
   ``socket.getaddrinfo`` in a bounded set of threads of its own, :class:`_Resolvers`);
   every connection the sender opens checks again (:func:`client`), because DNS can change
   after the first check: it resolves the name itself, refuses when an address is not
   public, and connects to the very address it checked, so no second lookup can answer
   differently (DNS rebinding). TLS is still verified against the name.
   ``NOCLASH_ALLOW_PRIVATE_WEBHOOKS=1`` lifts the address rule (a bot on the same host or
   network; the test suite).
2. **Signing.** ``Noclash-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
   "<t>." + body)>``, Stripe's scheme: the time is signed with the body, so a captured
   request cannot be replayed after the receiver's tolerance. The body is the event's
   envelope as compact JSON (:func:`encode`); those exact bytes are signed and sent. A
   chatbot without a secret gets its events unsigned (``POST
   /api/chatbots/{id}/webhook-secret`` makes one).
3. **Outcomes.** A 2xx is delivered. Anything else is retried, timeouts included: unlike
   a platform message (:mod:`noclash.channels.sending`), an event carries its id
   (``Noclash-Event-Id``, the same on every attempt) for the bot to drop a repeat, so
   sending again is always safe. Redirects are not followed (a 3xx is retried): a
   redirect could point anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpx

from noclash.channels.sending import Outcome, SendResult
from noclash.db.tables import WEBHOOK_DESTINATION

SIGNATURE_HEADER = "Noclash-Signature"
EVENT_ID_HEADER = "Noclash-Event-Id"
USER_AGENT = "noclash-webhooks"
# What a receiver should accept by default: a signature made at most this long ago (or
# ahead, for clocks that differ).
TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"
# 256 bits: the HMAC key's full strength (SHA-256's block makes longer keys no stronger).
SECRET_BYTES = 32
# How much of a refusal's body is kept in the delivery's last_error.
EXCERPT_BYTES = 200
_SCHEMES = ("http", "https")
# IPv6 forms that carry an IPv4 address a gateway connects to.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeWebhookUrl(ValueError):
    """A webhook URL noclash will not send to; the message says why, naming
    ``webhook_url``."""


# -- 1. where ---------------------------------------------------------------------------------


def parse_url(url: str) -> httpx.URL:
    """``url`` as the sender will use it, or UnsafeWebhookUrl: http or https, a host, no
    user name or password (the signature authenticates noclash, and the URL is shown in
    every answer about the chatbot), nothing a parser could read two ways."""
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise UnsafeWebhookUrl("webhook_url must not contain spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeWebhookUrl(f"webhook_url is not a valid URL: {exc}") from None
    if parsed.scheme not in _SCHEMES:
        raise UnsafeWebhookUrl("webhook_url must be an http:// or https:// URL")
    if not parsed.raw_host:
        raise UnsafeWebhookUrl("webhook_url has no host")
    try:
        parsed.raw_host.decode("ascii")
        parsed.host  # noqa: B018 (decodes an internationalised name: is it one?)
    except UnicodeError:
        raise UnsafeWebhookUrl("webhook_url's host is not a valid host name") from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise UnsafeWebhookUrl("webhook_url's port must be 1 to 65535")
    if parsed.userinfo:
        raise UnsafeWebhookUrl(
            "webhook_url must not carry a user name or password: the signature "
            "(Noclash-Signature) authenticates noclash to your bot"
        )
    return parsed


def unusable_url(url: str) -> str | None:
    """Why no sender can use ``url`` (:func:`parse_url`'s reason), or None: for a URL
    stored around the API's check (another tool, an older version)."""
    try:
        parse_url(url)
    except UnsafeWebhookUrl as exc:
        return str(exc)
    return None


# What each kind of address is called in a refusal, most specific first.
_KINDS = (
    ("unspecified", "an unspecified address"),
    ("loopback", "a loopback address"),
    ("link_local", "a link-local address"),
    ("multicast", "a multicast address"),
    ("private", "a private address"),
    ("reserved", "a reserved address"),
)


def refusal(address: str) -> str | None:
    """What ``address`` (an IP address as text) is, when noclash will not connect to it
    (``"a loopback address"``); None when it is public. An IPv6 address that carries an
    IPv4 one (mapped, NAT64, 6to4) is judged by the IPv4 address it leads to."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]  # an IPv6 zone (fe80::1%eth0) names an interface
    )
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        elif ip.sixtofour is not None and refusal(str(ip.sixtofour)) is not None:
            return "a 6to4 address of a non-public IPv4 address"
    for flag, kind in _KINDS:
        if getattr(ip, f"is_{flag}"):
            return kind
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:  # fec0::/10, deprecated
        return "a site-local address"
    if not ip.is_global:
        return "a non-public address"
    return None


def _getaddrinfo(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# Threads resolving a webhook's host, at most, in one process: the rest wait for one.
RESOLVER_THREADS = 32
# How often a lookup that waits for a resolver thread looks again.
_RESOLVER_POLL_SECONDS = 0.02


class _Resolvers:
    """Bounds the threads blocked in ``getaddrinfo`` for webhooks, counted from a thread's
    start to its end, not while its caller waits.

    Why: ``getaddrinfo`` cannot be cancelled, and a host whose DNS server never answers
    (any owner can name one) holds its thread for the resolver's own timeout, seconds to
    tens of seconds. On anyio's shared worker threads, the 40 that every request's token
    lookup and database work take, 40 such names at once stalled every request of the
    process until they timed out; and a caller that gave up released its share while its
    thread ran on, so a steady flood grew threads without bound. Here lookups take a
    limiter of their own (never the shared one), at most ``RESOLVER_THREADS`` are under
    way, and a lookup beyond them waits (within its caller's timeout) for one to end: a
    slow name delays other webhook lookups, nothing else.

    The count is a plain lock-guarded integer rather than an anyio primitive: a process
    resolves on several event loops (the API's, a dispatcher's), and the threads that end
    a lookup are not on any of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live = 0
        self._lock = threading.Lock()

    def _take(self) -> bool:
        with self._lock:
            if self.live >= self.limit:
                return False
            self.live += 1
            return True

    def _give(self) -> None:
        with self._lock:
            self.live -= 1

    async def resolve(self, host: str, port: int) -> list[str]:
        while not self._take():
            await anyio.sleep(_RESOLVER_POLL_SECONDS)
        # Who gives the slot back: the thread when it ran, this task when it never did
        # (cancelled before the thread took the call).
        owner = ["task"]

        def run() -> list[str]:
            with self._lock:
                if owner[0] != "task":
                    raise OSError("the lookup was abandoned before it started")
                owner[0] = "thread"
            try:
                return _getaddrinfo(host, port)
            finally:
                self._give()

        try:
            return await anyio.to_thread.run_sync(
                run, abandon_on_cancel=True, limiter=anyio.CapacityLimiter(1)
            )
        finally:
            with self._lock:
                never_ran = owner[0] == "task"
                owner[0] = "gone"
            if never_ran:
                self._give()


_resolvers = _Resolvers(RESOLVER_THREADS)


async def addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses of ``host``, resolved in a thread of its own (``getaddrinfo`` blocks;
    :class:`_Resolvers`), each one public unless ``allow_private``; UnsafeWebhookUrl when
    one is not, or when the name does not resolve."""
    try:
        found = await _resolvers.resolve(host, port)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise UnsafeWebhookUrl(f"webhook_url's host {host} cannot be resolved: {reason}") from None
    if not allow_private:
        for address in found:
            kind = refusal(address)
            if kind is not None:
                what = "is" if host == address else f"resolves to {address},"
                raise UnsafeWebhookUrl(
                    f"webhook_url's host {host} {what} {kind}: noclash does not send to "
                    "its own network (NOCLASH_ALLOW_PRIVATE_WEBHOOKS=1 allows it)"
                )
    return found


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


async def check_url(url: str, *, allow_private: bool, timeout: float | None = None) -> None:
    """Raise UnsafeWebhookUrl unless noclash may send to ``url`` now, resolving its host
    within ``timeout`` seconds. With ``allow_private`` only the URL's form is checked (the
    address rule is off, so the name is not resolved: it may be one only the dispatcher's
    host knows)."""
    parsed = parse_url(url)
    if allow_private:
        return
    host = parsed.raw_host.decode("ascii")
    try:
        with anyio.fail_after(timeout):
            await addresses(host, _port(parsed), allow_private=False)
    except TimeoutError:
        raise UnsafeWebhookUrl(
            f"webhook_url's host {host} could not be resolved within {timeout:g} s"
        ) from None


class RefusedAddress(httpcore.ConnectError):
    """A connection not opened: its host is (now) not public, or does not resolve. An
    httpcore ConnectError, so httpx reports it as :class:`httpx.ConnectError` (caused by
    this) and the send is retried like any connection that could not be opened."""


class _PublicOnly(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to public addresses: resolves the host, refuses if any
    address is not public, then connects to an address it checked (never the name)."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            found = await addresses(host, port, allow_private=False)
        except UnsafeWebhookUrl as exc:
            raise RefusedAddress(str(exc)) from None
        error: Exception = RefusedAddress(f"webhook_url's host {host} has no address")
        for address in found:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (its exception mapping, its streams), whose connection pool
    opens connections through :class:`_PublicOnly`. httpx takes no network backend, so the
    pool it made is replaced: ``_pool`` is the one internal of httpx relied on, and
    ``tests/test_webhook_urls.py`` fails at once if it moves."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext) -> None:
        super().__init__(limits=limits, trust_env=False, verify=ssl_context)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PublicOnly(),
        )


def ssl_verify_context() -> ssl.SSLContext:
    """The system's certificates, nothing taken from the environment."""
    return httpx.create_ssl_context(trust_env=False)


def client(
    *,
    timeout: float,
    max_connections: int,
    allow_private: bool,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The HTTP client webhooks are sent with: every connection checked as above (unless
    ``allow_private``), no redirects followed, no proxy or certificate settings taken from
    the environment (a proxy would connect to a name noclash did not check).

    ``ssl_context``: the certificates to verify with (default: the system's, loaded anew;
    loading them takes milliseconds of CPU, so whoever makes many clients shares one)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    ssl_context = ssl_context or ssl_verify_context()
    transport = (
        httpx.AsyncHTTPTransport(limits=limits, trust_env=False, verify=ssl_context)
        if allow_private
        else _PublicOnlyTransport(limits, ssl_context)
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )


# -- 2. signing -------------------------------------------------------------------------------


def new_secret() -> str:
    """A webhook secret: ``whsec_`` (for secret scanners) and 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def encode(envelope: dict[str, Any]) -> bytes:
    """The body of an event's request: its envelope as compact JSON, UTF-8."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Noclash-Signature`` of ``body``: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when ``header`` (a ``Noclash-Signature``) signs ``body`` with ``secret`` and was
    made within ``tolerance`` seconds of ``now``. The receiver's side of :func:`sign`, for
    Python bots that install noclash (docs/events.md has a standalone one)."""
    if not header:
        return False
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        signature, t = fields["v1"], fields["t"]
    except (KeyError, ValueError):
        return False
    if not (t.isascii() and t.isdigit() and len(t) <= 12):  # unix seconds, nothing else
        return False
    timestamp = int(t)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature.encode())


# -- 3. sending -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventPost:
    """One event to one chatbot's webhook: where, the secret (None: unsigned), the envelope
    (``{id, type, chatbot_id, conversation_id, created_at, data}``)."""

    url: str
    secret: str | None
    event: dict[str, Any]


class WebhookSender:
    """POSTs events to bots. Every outcome but a 2xx is RETRY (see the module docstring);
    ``confirms_by_echo`` is False as a bot has no echo (nor needs one: repeats are safe)."""

    destination = WEBHOOK_DESTINATION
    confirms_by_echo = False

    def __init__(self, timeout: float) -> None:
        # The whole exchange, name resolution to the answer's status, is bounded by this:
        # a bot that trickles its answer holds a dispatcher's slot no longer than one that
        # does not answer.
        self.timeout = timeout

    async def send(self, client: httpx.AsyncClient, post: EventPost) -> SendResult:
        body = encode(post.event)
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: str(post.event["id"]),
            "User-Agent": USER_AGENT,
        }
        if post.secret:
            headers[SIGNATURE_HEADER] = sign(post.secret, body)
        try:
            # asyncio's own timeout: the dispatcher runs on asyncio, and anyio's cancel
            # scope costs more Python on every send. The answer is streamed (only its
            # excerpt is read), through send() and aclose() rather than the stream()
            # context manager: that pair inside the timeout cost 40 us more per send
            # (paired rounds against bare POSTs, docs/performance.md).
            async with asyncio.timeout(self.timeout):
                request = client.build_request("POST", post.url, content=body, headers=headers)
                answer = await client.send(request, stream=True)
                try:
                    # Read (a little of) the body either way: a short one read to its end
                    # leaves the connection open for the next event.
                    excerpt = await _excerpt(answer)
                finally:
                    await answer.aclose()
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            # Checked when it was set; a URL written around the API cannot be sent to.
            return _unusable(post.url, exc)
        except httpx.ConnectTimeout:
            return SendResult(Outcome.RETRY, error=f"could not connect within {self.timeout:g} s")
        except (TimeoutError, httpx.TimeoutException):
            return SendResult(Outcome.RETRY, error=f"no answer within {self.timeout:g} s")
        except httpx.ConnectError as exc:
            if isinstance(exc.__cause__, RefusedAddress):
                return SendResult(Outcome.RETRY, error=f"not sent: {exc}")
            return SendResult(Outcome.RETRY, error=f"could not connect: {_say(exc)}")
        except httpx.TransportError as exc:
            return SendResult(Outcome.RETRY, error=f"no answer: {_say(exc)}")
        except Exception as exc:
            # Not httpx's: a host name IDNA refuses, a port out of range, each raised from
            # deep in the connection. Such a URL fails for good (every retry would fail
            # the same way); anything else is a bug, for the dispatcher to log.
            if unusable_url(post.url) is None:
                raise
            return _unusable(post.url, exc)
        status = answer.status_code
        if answer.is_success:
            return SendResult(Outcome.SENT, status_code=status)
        error = f"the webhook answered {status}"
        return SendResult(
            Outcome.RETRY, error=f"{error}: {excerpt}" if excerpt else error, status_code=status
        )


def _unusable(url: str, exc: Exception) -> SendResult:
    """A send that failed for good because of its URL: ``not sent:`` and why, in
    :func:`parse_url`'s words where it has some."""
    return SendResult(Outcome.FAILED, error=f"not sent: {unusable_url(url) or _say(exc)}")


async def _excerpt(answer: httpx.Response) -> str:
    """The start of an answer's body, on one line (a refusal's goes into last_error), and
    never the whole body: a bot's answer can be large."""
    read = b""
    async for chunk in answer.aiter_bytes():
        read += chunk
        if len(read) >= EXCERPT_BYTES:
            break
    text = read[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return " ".join(text.split())


def _say(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TOLERANCE_SECONDS",
    "EventPost",
    "RefusedAddress",
    "UnsafeWebhookUrl",
    "WebhookSender",
    "addresses",
    "check_url",
    "client",
    "encode",
    "new_secret",
    "parse_url",
    "refusal",
    "sign",
    "unusable_url",
    "verify",
]
