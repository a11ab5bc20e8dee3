"""``Idempotency-Key`` for every creating POST, as one ASGI middleware.

Why a middleware and not a dependency per route: it covers routes written by anyone,
including later ones, without touching them. The routes it covers are derived from the
app's route table: every ``POST /api/...`` route declared with status 201 (a create), so a
new creating route is covered the day it is added (a test lists them).

For a covered request that carries the header:

1. the caller is resolved (:func:`noclash.api.deps.resolve_caller`, shared with the
   route) and the key scoped to it: ``user:<id>`` for a bearer token, else ``anon:`` plus
   the route's UUID path parameters (a widget's public token, a session id), so two callers
   never share keys; a request with no usable scope passes through untouched (the route
   answers its 401 or 404);
2. the body is read (the body limits sit outside this middleware) and hashed;
3. a read that takes no lock looks for an answer already stored
   (:func:`noclash.unique.idempotency.peek`): found, it is replayed (or a 422 when it
   answered another request) and the route does not run;
4. the route runs, and at its **first database call**, in a worker thread, ONE connection
   and transaction is opened and the key claimed in it
   (:func:`noclash.unique.idempotency.claim`; :class:`~noclash.api.work.RequestTransaction`
   opens it then, so a route's slow work before it writes, such as asking a platform
   whose access token it was given, holds no transaction and on SQLite no write lock):

   - claimed: the route runs **in that transaction**, which the request carries
     (the routes' work helpers use it and never commit it). An answer below 500 is stored
     in the key's row and the transaction committed, and only then is the answer sent.
     A 5xx or an exception rolls everything back: the key is free again at once. A route
     that answered without a database call claims the key after it answered, and that
     answer is stored the same way;
   - otherwise the route stops there (:class:`KeyDecided`) and the answer is the key's:
     replay (the stored status, headers and body, plus ``Idempotent-Replayed: true``);
     mismatch (422: the key was used for another request); or in progress (the first
     holder did not finish within ``idempotency_wait_seconds``: 409 with
     ``Retry-After``).

Why one transaction: the create and its stored answer commit together or not at all, so a
crash at any instant leaves either nothing (the retry creates, once) or both (the retry
replays). A duplicate arriving meanwhile, at any process, waits in the database for the
first transaction to end (see :mod:`noclash.unique.idempotency`).

A keyed request holds its pool connection from the claim to the commit, so its work runs
on limiters of its own, sized to the pool: threads blocked in a claim (waiting for a
duplicate's commit) cannot take the threads that the holder of the key needs to finish.
Any database error met here (the caller's lookup, the read, the claim, the commit) is
answered like one met in a route: 503 problem+json with ``Retry-After``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
from anyio import CapacityLimiter
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noclash.api.deps import resolve_caller
from noclash.api.errors import RETRY_AFTER, database_error, problem
from noclash.api.problems import ProblemType
from noclash.api.work import TRANSACTION_STATE, RequestTransaction
from noclash.chat import events
from noclash.chat.errors import Unauthenticated
from noclash.config import Settings
from noclash.db.engine import read_only
from noclash.db.tables import idempotency_keys, max_length
from noclash.unique import idempotency as keys
from noclash.unique.ids import parse_uuid

log = logging.getLogger("noclash.api")

HEADER = "idempotency-key"
REPLAYED = "idempotent-replayed"
MAX_SCOPE = max_length(idempotency_keys.c.scope)
MAX_PATH = max_length(idempotency_keys.c.path)
_DATABASE_ERRORS = (DBAPIError, PoolTimeout)


# An operation whose answer holds a secret noclash never stores (a new user's API token)
# says so in the OpenAPI document with this extension set to false: its answer cannot be
# kept for a replay, so an Idempotency-Key on it is refused (400) rather than ignored.
REPLAYABLE = "x-noclash-replayable"


def creates(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The creating operations of an OpenAPI document's ``paths``: ``POST /api/...``
    answering 201, by path. The rule lives here alone; the document itself
    (:mod:`noclash.api.openapi`) applies it to describe the header where it is covered."""
    return {
        path: operations["post"]
        for path, operations in paths.items()
        if path.startswith("/api/") and "201" in operations.get("post", {}).get("responses", {})
    }


def _creates(app: Any) -> dict[str, dict[str, Any]]:
    return creates(app.openapi().get("paths", {})) if hasattr(app, "openapi") else {}


def creating_routes(app: Any) -> list[str]:
    """Path templates the middleware covers: ``POST /api/...`` answering 201 (a create),
    except those whose answer holds a secret (:data:`REPLAYABLE`).

    Read from the app's OpenAPI document, the public description of its routes, so the
    rule needs no framework internals and matches what clients see.
    """
    return sorted(p for p, op in _creates(app).items() if op.get(REPLAYABLE, True))


def unreplayable_routes(app: Any) -> list[str]:
    """Creates whose answer holds a secret: an ``Idempotency-Key`` on them is a 400."""
    return sorted(p for p, op in _creates(app).items() if not op.get(REPLAYABLE, True))


def anonymous(operation: dict[str, Any]) -> bool:
    """Whether the operation serves a caller without a token: no security requirement, or
    an empty one among its alternatives (``[{}, {"bearer": []}]``)."""
    return {} in operation.get("security", [{}])


@dataclass(frozen=True)
class _Request:
    """What the claim needs to know about the request."""

    caller: str
    key: str
    method: str
    path: str
    digest: str
    ttl: timedelta
    wait: timedelta


class IdempotencyMiddleware:
    """Run a creating POST once per ``(caller, Idempotency-Key)``; replay it afterwards."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (path, whether a caller without a token is served there)
        self._routes: list[tuple[re.Pattern[str], bool]] | None = None
        self._refused: list[re.Pattern[str]] | None = None
        self._limiters: tuple[CapacityLimiter, CapacityLimiter] | None = None

    # -- routing ------------------------------------------------------------------------
    def _covered(self, scope: Scope) -> tuple[dict[str, str], bool] | None:
        """Path parameters of the covered route matching this request, and whether that
        route serves a caller without a token; None if no covered route matches."""
        if self._routes is None:
            app = scope.get("app")
            operations = _creates(app)
            self._routes = [
                (compile_path(p)[0], anonymous(operations[p])) for p in creating_routes(app)
            ]
        path = scope.get("path", "")
        for regex, open_to_anonymous in self._routes:
            if m := regex.match(path):
                return m.groupdict(), open_to_anonymous
        return None

    def _refuses(self, scope: Scope) -> bool:
        if self._refused is None:
            self._refused = [compile_path(p)[0] for p in unreplayable_routes(scope.get("app"))]
        return any(regex.match(scope.get("path", "")) for regex in self._refused)

    def _limiters_for(self, settings: Settings) -> tuple[CapacityLimiter, CapacityLimiter]:
        """(claims, work): each as many threads as the pool has connections. Every keyed
        transaction holds a connection, so the work limiter always has a thread for it."""
        if self._limiters is None:
            size = max(1, settings.pool_size + settings.pool_max_overflow)
            self._limiters = (CapacityLimiter(size), CapacityLimiter(size))
        return self._limiters

    # -- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        raw_key = _header(scope, HEADER)
        if raw_key is not None and self._refuses(scope):
            detail = (
                "this request's answer holds a secret that is never stored, so it cannot be "
                "replayed: send it without Idempotency-Key"
            )
            await _reject(scope, receive, send, 400, ProblemType.INVALID_IDEMPOTENCY_KEY, detail)
            return
        covered = self._covered(scope) if raw_key is not None else None
        if raw_key is None or covered is None or len(scope["path"]) > MAX_PATH:
            # A covered path longer than the column holds an id no route accepts: the
            # route answers its 404 without writing anything.
            await self.app(scope, receive, send)
            return
        try:
            key = keys.check_key(raw_key.strip())
        except keys.InvalidIdempotencyKey as exc:
            await _reject(scope, receive, send, 400, ProblemType.INVALID_IDEMPOTENCY_KEY, str(exc))
            return
        params, open_to_anonymous = covered
        try:
            caller = await _caller_scope(scope, params, open_to_anonymous)
        except _DATABASE_ERRORS as exc:
            await _database_error(exc, scope, receive, send)
            return
        if caller is None:
            await self.app(scope, receive, send)
            return
        if caller.startswith("anon:") and parse_uuid(key) is None:
            # A public caller has no identity: the key is its only secret, so it must be
            # unguessable, or another visitor could replay this visitor's response.
            detail = "a caller without a bearer token must use a UUID as Idempotency-Key"
            await _reject(scope, receive, send, 400, ProblemType.INVALID_IDEMPOTENCY_KEY, detail)
            return

        body = await _read_body(receive)
        if body is None:  # the client went away before sending its body: nothing to do
            return
        state = scope["app"].state
        settings: Settings = state.settings
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{scope['path']}?{query}" if query else scope["path"]
        request = _Request(
            caller=caller,
            key=key,
            method=scope["method"],
            path=scope["path"],
            digest=keys.request_hash(scope["method"], target, body),
            ttl=timedelta(seconds=settings.idempotency_ttl_seconds),
            wait=timedelta(seconds=settings.idempotency_wait_seconds),
        )
        claims, work = self._limiters_for(settings)
        try:
            known = await anyio.to_thread.run_sync(_peek, state.engine, request, limiter=claims)
        except _DATABASE_ERRORS as exc:
            await _database_error(exc, scope, receive, send)
            return
        if known is not None:  # answered before: the route does not run again
            await _decided(known, scope, receive, send)
            return
        key = _Key(state.engine, request, claims)
        await self._execute(RequestTransaction(key.begin, work), key, scope, body, receive, send)

    async def _execute(
        self,
        tx: RequestTransaction,
        key: _Key,
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

        inner = dict(scope)
        inner["state"] = {**scope.get("state", {}), TRANSACTION_STATE: tx}
        try:
            # The route's worker threads record into this set (they run in copies of
            # this context); its readers are woken after the commit below.
            with events.collecting() as recorded:
                await self.app(inner, replay_receive, capture)
        except KeyDecided:
            pass  # the route stopped at its first database call: answered below
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _close(tx)
            raise
        if key.decided is not None:
            await _decided(key.decided, scope, receive, send)
            return
        if start is None:  # pragma: no cover - every route sends a response
            await _close(tx)
            return
        status = int(start["status"])
        if status >= 500:  # not stored: the key is free again at once
            await _close(tx)
            await send(start)
            await send({"type": "http.response.body", "body": b"".join(chunks)})
            return
        try:
            # A route that answered without reaching the database (its input refused, or
            # a platform's answer) claims the key now, so its answer is stored as any is.
            conn = await tx.connection()
        except KeyDecided:
            await _decided(key.decided or keys.InProgress(None), scope, receive, send)
            return
        except _DATABASE_ERRORS as exc:
            await _database_error(exc, scope, receive, send)
            return
        assert key.claimed is not None
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
        stored = keys.StoredResponse(status, headers, b"".join(chunks))
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(
                    _end, conn, key.claimed, stored, limiter=tx.limiter
                )
            except _DATABASE_ERRORS as exc:
                # Nothing committed, or the commit's outcome is unknown (the connection
                # died during it): either way the retry decides correctly, by replaying
                # what committed or by running anew. Never send an uncommitted answer.
                await _database_error(exc, scope, receive, send)
                return
        if recorded or recorded.queued:
            scope["app"].state.hub.committed(recorded)
        await send(start)
        await send({"type": "http.response.body", "body": stored.body, "more_body": False})


class KeyDecided(Exception):
    """Raised into a route at its first database call when the request's key is not its
    to run: answered already, used for another request, or still held by a duplicate.
    The middleware answers that instead of whatever the route would have."""


class _Key:
    """The request's key, claimed when the route's transaction opens
    (:class:`~noclash.api.work.RequestTransaction`): the claim takes the key, and on
    SQLite the write lock, only once the route has done what it does before writing."""

    def __init__(self, engine: Engine, request: _Request, limiter: CapacityLimiter) -> None:
        self.engine = engine
        self.request = request
        self.limiter = limiter
        self.claimed: keys.Claimed | None = None
        self.decided: keys.Outcome | None = None

    async def begin(self) -> Connection:
        """The transaction, with the key claimed in it; else :class:`KeyDecided`."""
        outcome, conn = await anyio.to_thread.run_sync(
            _claim, self.engine, self.request, limiter=self.limiter
        )
        if conn is None or not isinstance(outcome, keys.Claimed):
            self.decided = outcome
            raise KeyDecided(outcome)
        self.claimed = outcome
        return conn


async def _close(tx: RequestTransaction) -> None:
    """Roll back and close the request's transaction, if it was opened."""
    if tx.conn is not None:
        await anyio.to_thread.run_sync(_end, tx.conn, None, None, limiter=tx.limiter)


async def _decided(outcome: keys.Outcome, scope: Scope, receive: Receive, send: Send) -> None:
    """The answer to a request whose key was not its to run."""
    if isinstance(outcome, keys.Replay):
        await _replay(outcome.response, send)
    elif isinstance(outcome, keys.Mismatch):
        detail = (
            "this Idempotency-Key was already used for a different request "
            f"({outcome.method} {outcome.path} with another body)"
        )
        await _reject(scope, receive, send, 422, ProblemType.IDEMPOTENCY_KEY_REUSED, detail)
    else:
        detail = "a request with this Idempotency-Key is still in progress; retry later"
        # A collision, so a 409 naming the field, like every unique conflict.
        conflict = problem(
            409,
            detail,
            kind=ProblemType.IDEMPOTENCY_KEY_IN_PROGRESS,
            headers=RETRY_AFTER,
            fields=["Idempotency-Key"],
        )
        await conflict(scope, receive, send)


# -- the database side, in worker threads -------------------------------------------------
def _peek(engine: Engine, request: _Request) -> keys.Replay | keys.Mismatch | None:
    """The key's stored answer, if it has one (a read that takes no lock: a retry of an
    answered request neither runs the route's slow part again nor queues for a writer)."""
    with read_only(engine).connect() as conn:
        return keys.peek(
            conn,
            idempotency_keys,
            scope=request.caller,
            key=request.key,
            request_hash=request.digest,
        )


def _claim(engine: Engine, request: _Request) -> tuple[keys.Outcome, Connection | None]:
    """Open the request's transaction and claim the key in it; keep it open if claimed."""
    conn = engine.connect()
    try:
        conn.begin()
        outcome = keys.claim(
            conn,
            idempotency_keys,
            scope=request.caller,
            key=request.key,
            method=request.method,
            path=request.path,
            request_hash=request.digest,
            ttl=request.ttl,
            wait=request.wait,
        )
    except BaseException:
        conn.close()  # rolls back
        raise
    if isinstance(outcome, keys.Claimed):
        return outcome, conn
    conn.close()  # nothing was written
    return outcome, None


def _end(
    conn: Connection, claimed: keys.Claimed | None, stored: keys.StoredResponse | None
) -> None:
    """Store the answer and commit (``stored`` given), else roll back; close either way."""
    try:
        if stored is not None and claimed is not None:
            keys.complete(conn, idempotency_keys, claimed.claim_id, stored)
            conn.commit()
        else:
            try:
                conn.rollback()
            except _DATABASE_ERRORS as exc:
                # Nothing to undo that the database will not undo itself: an uncommitted
                # transaction dies with its connection.
                log.warning("rollback of an idempotent request failed: %s", exc)
    finally:
        conn.close()


# -- helpers ------------------------------------------------------------------------------
async def _caller_scope(
    scope: Scope, params: dict[str, str], open_to_anonymous: bool
) -> str | None:
    """The key's scope, or None to let the request through unkeyed: a wrong token, or no
    token on a route that needs one (the route answers its 401 first, as it would without
    the header, and nothing is claimed or stored for a caller it refuses)."""
    try:
        user = await resolve_caller(scope)
    except Unauthenticated:
        return None  # the route answers the same 401 (the outcome is remembered)
    if user is not None:
        return f"user:{user.id}"
    if not open_to_anonymous:
        return None
    ids = []
    for name in sorted(params):
        value = parse_uuid(params[name])
        if value is None:
            return None  # malformed token or session: the route answers 404
        ids.append(f"{name}={value}")
    caller = "anon:" + "/".join(ids)
    return caller if ids and len(caller) <= MAX_SCOPE else None


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


async def _database_error(exc: BaseException, scope: Scope, receive: Receive, send: Send) -> None:
    answer = database_error(exc, scope["method"], scope["path"])
    if answer is None:  # pragma: no cover - only database errors are caught
        raise exc
    await answer(scope, receive, send)


async def _reject(
    scope: Scope, receive: Receive, send: Send, status: int, kind: ProblemType, detail: str
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


__all__ = [
    "HEADER",
    "REPLAYABLE",
    "REPLAYED",
    "IdempotencyMiddleware",
    "anonymous",
    "creates",
    "creating_routes",
    "unreplayable_routes",
]
