"""Abuse limits of the public endpoints, counted in the database.

The hazard: the widget endpoints are public (a public token is printed in every page that
embeds the widget), so anyone can start sessions and post messages as fast as they can
send requests, and anyone can try bearer tokens. The app tier is stateless: several
processes on several hosts serve one database, so a counter kept in a process would let
N processes allow N times the limit. Every counter here is a row of ``rate_limits``,
incremented by one statement that every process shares::

    INSERT INTO rate_limits (bucket, window_start, hits) VALUES (:bucket, :window, 1)
    ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1
    RETURNING hits

The database serialises concurrent increments of one row, so each request gets its own
count, wherever it runs; a request is refused when its count exceeds the limit.

Fixed windows, not sliding ones: one row and one upsert per bucket and request, a purge
that deletes whole old windows, and a ``Retry-After`` that is simply the end of the window.
The price is known and bounded: a client that spends its whole budget at the end of one
window and again at the start of the next gets twice the limit in a short span. These are
ceilings against floods, not quotas anyone is billed by, so that is the right trade; a
sliding estimate would read a second row on every request.

What is limited:

- ``POST /api/widget/{public_token}/sessions`` and ``.../sessions/{session_id}/messages``:
  per client address and per chatbot. The address is counted first, and the chatbot only
  for requests the address limit allowed, so one address flooding a chatbot exhausts its
  own budget and not the chatbot's (which its other visitors share).
- Failed bearer tokens: every 401 answered to a request that carried ``Authorization``
  counts against its address; past the limit the 401 becomes a 429 with ``Retry-After``. A
  correct token is never counted or slowed: the check happens only after the token has been
  verified and found wrong. There is no server-side delay on purpose: a delay holds a
  connection slot for every attempt, which helps a flood fill ``NOCLASH_MAX_CONNECTIONS``,
  while tokens are 128 random bits, so what the limit bounds is the cost and the noise of
  the attempts, not the odds of a guess.

The client address is ``scope["client"]``: the peer, or the client an ``X-Forwarded-For``
names when the peer is a trusted proxy (``NOCLASH_TRUSTED_PROXIES``, applied by the server,
see :mod:`noclash.serving`). With ``*`` (any peer is a proxy) it is the rightmost entry of
``X-Forwarded-For``, the one the connecting proxy wrote, and not uvicorn's choice then,
the leftmost, which the client writes (:func:`client_address`). IPv6 addresses are counted
per /64, the block one subscriber is given, so rotating through it does not multiply the
budget.

When the counter cannot be reached (the database is down, the pool is exhausted) the
request goes through: the route then answers from the same database, 503 if it is really
gone, and a limiter that refused everything while the database hiccups would be an outage
of its own.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noclash.api.errors import problem
from noclash.api.problems import ProblemType
from noclash.config import Settings
from noclash.db.dialects import dialect_for
from noclash.db.tables import rate_limits
from noclash.unique.ids import parse_uuid

log = logging.getLogger("noclash.api")

# The limited routes (POST) and the family of limits each one counts against.
LIMITED_ROUTES: dict[str, str] = {
    "/api/widget/{public_token}/sessions": "sessions",
    "/api/widget/{public_token}/sessions/{session_id}/messages": "messages",
}


def _unreachable(exc: Exception) -> bool:
    """The database or the pool is out of reach (not a fault of the statement)."""
    if isinstance(exc, OperationalError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``limit`` hits in ``bucket`` per window (0: unlimited, not counted)."""

    bucket: str
    limit: int
    what: str  # for the problem's detail: "sessions from this address"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0
    refused_by: Limit | None = None


ALLOWED = Verdict(True)


class FixedWindowCounter:
    """Hit counters in ``rate_limits``, one row per bucket and window of ``window`` seconds.

    Windows are aligned on the Unix epoch by the application's clock, so every process on
    every host counts into the same row as long as their clocks agree (NTP); a host a few
    seconds off counts a few seconds of its requests into a neighbouring window.
    """

    def __init__(
        self, engine: Engine, window: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.window = window
        self.clock = clock
        self._insert = dialect_for(engine).insert(rate_limits)
        # When this process next deletes old windows. Only a schedule: any process may
        # purge at any time, and two purges at once delete the same rows harmlessly.
        self._next_purge = 0.0

    def hit(self, limits: Sequence[Limit]) -> Verdict:
        """Count one hit in each of ``limits``, in order, up to the first one exceeded.

        One transaction: on PostgreSQL the rows are locked in the order given, and every
        caller gives address buckets before chatbot buckets, so two requests never wait
        for each other's rows in opposite orders.
        """
        counted = [lim for lim in limits if lim.limit > 0]
        if not counted:
            return ALLOWED
        now = self.clock()
        start = math.floor(now / self.window) * self.window
        window_start = datetime.fromtimestamp(start, UTC)
        verdict = ALLOWED
        with self.engine.begin() as conn:
            for lim in counted:
                hits = conn.execute(self._upsert(lim.bucket, window_start)).scalar_one()
                if hits > lim.limit:
                    retry = max(1, math.ceil(start + self.window - now))
                    verdict = Verdict(False, retry, lim)
                    break
        if now >= self._next_purge:
            self._next_purge = now + self.window
            self.purge(before=window_start)
        return verdict

    def _upsert(self, bucket: str, window_start: datetime) -> sa.Executable:
        stmt = self._insert.values(bucket=bucket, window_start=window_start, hits=1)
        return stmt.on_conflict_do_update(
            index_elements=[rate_limits.c.bucket, rate_limits.c.window_start],
            set_={"hits": rate_limits.c.hits + 1},
        ).returning(rate_limits.c.hits)

    def purge(self, *, before: datetime) -> int:
        """Delete every window that started before ``before``: a range of the primary
        key's leading column, so it costs the rows it deletes and no scan."""
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(rate_limits).where(rate_limits.c.window_start < before))
        return result.rowcount


def _last_forwarded(scope: Scope) -> str | None:
    """The rightmost address in the request's ``X-Forwarded-For`` (every such header, in
    order), without a port or brackets; None when there is none."""
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
    entries = [e.strip() for e in ",".join(values).split(",") if e.strip()]
    if not entries:
        return None
    last = entries[-1]
    if last.startswith("["):  # [2001:db8::1]:443
        return last[1:].partition("]")[0] or None
    if last.count(":") == 1:  # 203.0.113.7:443 (an IPv6 address has more colons)
        return last.partition(":")[0] or None
    return last


def client_address(scope: Scope, *, any_proxy: bool = False) -> str | None:
    """The key a client is counted under: its IPv4 address or its IPv6 /64.

    ``any_proxy`` (``NOCLASH_TRUSTED_PROXIES=*``): every peer is a proxy, and the client is
    the address the proxy that connected appended, the rightmost in ``X-Forwarded-For``.
    uvicorn's ``scope["client"]`` is then the *leftmost* entry (with every hop trusted it
    has no untrusted one to stop at), which is whatever the client wrote itself: a made-up
    header per request would be a fresh budget per request."""
    client = scope.get("client")
    forwarded = _last_forwarded(scope) if any_proxy else None
    if forwarded is not None:
        client = (forwarded, 0)
    if not client or not client[0]:
        return None
    host = client[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _has_authorization(scope: Scope) -> bool:
    return any(name == b"authorization" for name, _ in scope.get("headers", ()))


class RateLimitMiddleware:
    """Refuse requests past their limits with 429 ``rate-limited`` and ``Retry-After``.

    It sits outside every other middleware: a refused request costs one statement and no
    body is read, and a 429 is never stored as the answer of an ``Idempotency-Key`` (a
    retry with the key after the window runs the request).
    """

    def __init__(self, app: ASGIApp, *, engine: Engine, settings: Settings) -> None:
        self.app = app
        self.counter = FixedWindowCounter(engine, settings.rate_limit_window_seconds)
        per = {
            "sessions": (
                settings.rate_limit_sessions_per_address,
                settings.rate_limit_sessions_per_chatbot,
            ),
            "messages": (
                settings.rate_limit_messages_per_address,
                settings.rate_limit_messages_per_chatbot,
            ),
        }
        # Routes whose limits are all 0 are not even matched.
        self.routes = [
            (compile_path(path)[0], family, *per[family])
            for path, family in LIMITED_ROUTES.items()
            if any(per[family])
        ]
        self.auth_failures = settings.rate_limit_auth_failures_per_address
        # The value uvicorn is given (noclash.serving): only "*" exactly is "any peer".
        self.any_proxy = settings.trusted_proxies.strip() == "*"

    def limits_for(self, scope: Scope) -> list[Limit]:
        """The limits a request counts against, address first; none for other routes."""
        if scope.get("method") != "POST":
            return []
        path = scope.get("path", "")
        for regex, family, per_address, per_chatbot in self.routes:
            match = regex.match(path)
            if match is None:
                continue
            limits = []
            address = client_address(scope, any_proxy=self.any_proxy)
            if address is not None:
                what = f"{family} from this address"
                limits.append(Limit(f"{family}/address/{address}", per_address, what))
            # The token as the route will read it, so that spelling one UUID another way
            # (upper case, braces, no hyphens) does not open a fresh bucket. A token that
            # is no UUID is a 404 and only counts against the address.
            token = parse_uuid(match.group("public_token"))
            if token is not None:
                what = f"{family} on this chatbot"
                limits.append(Limit(f"{family}/chatbot/{token}", per_chatbot, what))
            return limits
        return []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits_for(scope) if self.routes else None
        if limits:
            verdict = await self._hit(limits)
            if not verdict.allowed:
                await self._refuse(verdict, scope, receive, send)
                return
        if self.auth_failures > 0 and _has_authorization(scope):
            address = client_address(scope, any_proxy=self.any_proxy)
            if address is not None:
                send = self._watch_failures(address, scope, receive, send)
        await self.app(scope, receive, send)

    async def _hit(self, limits: list[Limit]) -> Verdict:
        try:
            return await anyio.to_thread.run_sync(self.counter.hit, limits)
        except (DBAPIError, PoolTimeout) as exc:
            if not _unreachable(exc):
                raise
            log.warning("rate limits not counted (the database is unreachable): %s", exc)
            return ALLOWED

    def _watch_failures(self, address: str, scope: Scope, receive: Receive, send: Send) -> Send:
        """``send``, counting a 401 against the address and turning it into a 429 past the
        limit (the 401's own body is then dropped)."""
        what = "failed bearer tokens from this address"
        limit = Limit(f"auth-failures/address/{address}", self.auth_failures, what)
        replaced = False

        async def watching_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start" and message["status"] == 401:
                verdict = await self._hit([limit])
                if not verdict.allowed:
                    replaced = True
                    await self._refuse(verdict, scope, receive, send)
                    return
            await send(message)

        return watching_send

    async def _refuse(self, verdict: Verdict, scope: Scope, receive: Receive, send: Send) -> None:
        what = verdict.refused_by.what if verdict.refused_by else "requests"
        detail = f"too many {what}; retry in {verdict.retry_after} s"
        response = problem(
            429,
            detail,
            kind=ProblemType.RATE_LIMITED,
            headers={"Retry-After": str(verdict.retry_after)},
        )
        await response(scope, receive, send)


__all__ = [
    "LIMITED_ROUTES",
    "FixedWindowCounter",
    "Limit",
    "RateLimitMiddleware",
    "Verdict",
    "client_address",
]
