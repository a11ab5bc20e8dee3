"""``Idempotency-Key`` for every creating POST, as one ASGI middleware.

Why a middleware and not a dependency per route: it covers routes written by anyone,
including later ones, without touching them. The routes it covers are derived from the
app's route table: every ``POST /api/...`` route declared with status 201 (a create), so a
new creating route is covered the day it is added (a test lists them).

For a covered request that carries the header:

1. the caller's scope is resolved: ``user:<id>`` for a bearer token, else ``anon:`` plus
   the route's UUID path parameters (a widget's public token, a session id), so two callers
   never share keys; a request with no usable scope passes through untouched (the route
   answers its 401 or 404);
2. the body is read (the body-size limit sits outside this middleware) and hashed;
3. :func:`noclash.unique.idempotency.claim` decides, in the database:

   - claimed: the request runs; a response below 500 is stored, a 5xx or an exception
     releases the key so that a retry runs again;
   - replay: the stored status, headers and body, plus ``Idempotent-Replayed: true``;
   - mismatch: 422, the key was used for another request;
   - in progress: poll the database until the first finishes (then replay), for at most
     ``wait_seconds``; after that 409 with ``Retry-After``.

Nothing is held in the process: waiting is polling the shared row, so duplicates arriving
at different processes behave exactly like duplicates arriving at one.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy.engine import Engine
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noclash.api.deps import resolve_caller
from noclash.api.errors import problem
from noclash.chat.errors import Unauthenticated
from noclash.config import Settings
from noclash.db.tables import idempotency_keys
from noclash.unique import idempotency as keys
from noclash.unique.ids import parse_uuid

HEADER = "idempotency-key"
REPLAYED = "idempotent-replayed"
MAX_SCOPE = keys.MAX_SCOPE_LENGTH


def creating_routes(app: Any) -> list[str]:
    """Path templates the middleware covers: ``POST /api/...`` answering 201 (a create).

    Read from the app's OpenAPI document, the public description of its routes, so the
    rule needs no framework internals and matches what clients see.
    """
    paths = app.openapi().get("paths", {}) if hasattr(app, "openapi") else {}
    return sorted(
        path
        for path, operations in paths.items()
        if path.startswith("/api/") and "201" in operations.get("post", {}).get("responses", {})
    )


class IdempotencyMiddleware:
    """Run a creating POST once per ``(caller, Idempotency-Key)``; replay it afterwards."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        wait_seconds: float = 10.0,
        poll_seconds: float = 0.05,
        lease_seconds: float = keys.DEFAULT_LEASE.total_seconds(),
    ) -> None:
        self.app = app
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self._routes: list[re.Pattern[str]] | None = None

    # -- routing ------------------------------------------------------------------------
    def _covered(self, scope: Scope) -> dict[str, str] | None:
        """Path parameters of the covered route matching this request, or None."""
        if self._routes is None:
            self._routes = [compile_path(p)[0] for p in creating_routes(scope.get("app"))]
        path = scope.get("path", "")
        for regex in self._routes:
            if m := regex.match(path):
                return m.groupdict()
        return None

    # -- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        raw_key = _header(scope, HEADER)
        params = self._covered(scope) if raw_key is not None else None
        if raw_key is None or params is None:
            await self.app(scope, receive, send)
            return
        try:
            key = keys.check_key(raw_key.strip())
        except keys.InvalidIdempotencyKey as exc:
            await _reject(scope, receive, send, 400, "invalid-idempotency-key", str(exc))
            return
        state = scope["app"].state
        engine: Engine = state.engine
        settings: Settings = state.settings
        caller = await self._caller_scope(scope, params)
        if caller is None:
            await self.app(scope, receive, send)
            return
        if caller.startswith("anon:") and parse_uuid(key) is None:
            # A public caller has no identity: the key is its only secret, so it must be
            # unguessable, or another visitor could replay this visitor's response.
            detail = "a caller without a bearer token must use a UUID as Idempotency-Key"
            await _reject(scope, receive, send, 400, "invalid-idempotency-key", detail)
            return

        body = await _read_body(receive)
        if body is None:  # the client went away before sending its body: nothing to do
            return
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{scope['path']}?{query}" if query else scope["path"]
        digest = keys.request_hash(scope["method"], target, body)
        ttl = timedelta(seconds=settings.idempotency_ttl_seconds)
        deadline = time.monotonic() + self.wait_seconds

        while True:
            outcome = await anyio.to_thread.run_sync(
                _claim, engine, caller, key, scope, digest, ttl, self.lease
            )
            if isinstance(outcome, keys.Claimed):
                await self._execute(engine, outcome, scope, body, receive, send)
                return
            if isinstance(outcome, keys.Replay):
                await _replay(outcome.response, send)
                return
            if isinstance(outcome, keys.Mismatch):
                detail = (
                    "this Idempotency-Key was already used for a different request "
                    f"({outcome.method} {outcome.path} with another body)"
                )
                await _reject(scope, receive, send, 422, "idempotency-key-reused", detail)
                return
            if time.monotonic() >= deadline:
                detail = "a request with this Idempotency-Key is still in progress; retry later"
                # A collision, so a 409 naming the field, like every unique conflict.
                conflict = problem(
                    409,
                    detail,
                    kind="idempotency-key-in-progress",
                    headers={"Retry-After": "1"},
                    fields=["Idempotency-Key"],
                )
                await conflict(scope, receive, send)
                return
            await asyncio.sleep(self.poll_seconds)

    async def _caller_scope(self, scope: Scope, params: dict[str, str]) -> str | None:
        try:
            user = await resolve_caller(scope)
        except Unauthenticated:
            return None  # the route answers the same 401 (the outcome is remembered)
        if user is not None:
            return f"user:{user.id}"
        ids = []
        for name in sorted(params):
            value = parse_uuid(params[name])
            if value is None:
                return None  # malformed token or session: the route answers 404
            ids.append(f"{name}={value}")
        caller = "anon:" + "/".join(ids)
        return caller if ids and len(caller) <= MAX_SCOPE else None

    async def _execute(
        self,
        engine: Engine,
        claimed: keys.Claimed,
        scope: Scope,
        body: bytes,
        receive: Receive,
        send: Send,
    ) -> None:
        start: Message | None = None
        chunks: list[bytes] = []
        delivered = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_release, engine, claimed)
            raise
        if start is None:  # pragma: no cover - every route sends a response
            await anyio.to_thread.run_sync(_release, engine, claimed)
            return
        status = int(start["status"])
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
        stored = keys.StoredResponse(status, headers, b"".join(chunks))
        if status >= 500:
            await anyio.to_thread.run_sync(_release, engine, claimed)
        else:
            await anyio.to_thread.run_sync(_complete, engine, claimed, stored)
        await send(start)
        await send({"type": "http.response.body", "body": stored.body, "more_body": False})


# -- database calls, each its own short transaction (run in a worker thread) --------------
def _claim(
    engine: Engine,
    caller: str,
    key: str,
    scope: Scope,
    digest: str,
    ttl: timedelta,
    lease: timedelta,
) -> keys.Outcome:
    with engine.begin() as conn:
        return keys.claim(
            conn,
            idempotency_keys,
            scope=caller,
            key=key,
            method=scope["method"],
            path=scope["path"],
            request_hash=digest,
            ttl=ttl,
            lease=lease,
        )


def _complete(engine: Engine, claimed: keys.Claimed, response: keys.StoredResponse) -> None:
    with engine.begin() as conn:
        keys.complete(conn, idempotency_keys, claimed.claim_id, response)


def _release(engine: Engine, claimed: keys.Claimed) -> None:
    with engine.begin() as conn:
        keys.release(conn, idempotency_keys, claimed.claim_id)


# -- helpers ------------------------------------------------------------------------------
def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes | None:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)
        elif message["type"] == "http.disconnect":
            return None


async def _reject(
    scope: Scope, receive: Receive, send: Send, status: int, kind: str, detail: str
) -> None:
    """A problem+json answer about the header, written before anything ran."""
    response = problem(
        status, detail, kind=kind, fields=[{"field": "Idempotency-Key", "message": detail}]
    )
    await response(scope, receive, send)


async def _replay(response: keys.StoredResponse, send: Send) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((REPLAYED.encode(), b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


__all__ = ["HEADER", "REPLAYED", "IdempotencyMiddleware", "creating_routes"]
