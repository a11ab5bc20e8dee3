"""Route work: each route does its database work in ONE worker-thread call, made here.

Every route is ``async`` and hands a plain function to one of three helpers:

- :func:`write`: ``work(conn, *args)`` inside a transaction;
- :func:`read`: ``work(conn, *args)`` on a read-only connection (on SQLite a deferred
  transaction, which never queues behind writers);
- :func:`deliver`: ``work(bind, *args)`` where ``bind`` is the engine, for domain code that
  owns its transactions (:func:`noclash.chat.inbound.receive_message` shares a
  conversation's lock between concurrent deliveries only when it commits itself).

``render`` (a :class:`~noclash.api.responses.Rendered` or any callable) turns the result
into the response in the same thread call, after the commit: validation and
serialisation cost no second thread-pool hop, and no answer leaves before its commit.

**The request's transaction.** A create carrying an ``Idempotency-Key`` must commit the
key's stored answer in the same transaction as the create (:mod:`noclash.api.idempotency`).
For such a request the middleware puts a :class:`RequestTransaction` in the request's
scope, opened at the route's first database call; then all three helpers run the work on
*that* connection, never commit it, and ``write``/``deliver`` wrap the work in a
SAVEPOINT: an error answered 4xx undoes the route's writes but leaves the transaction
usable, so the middleware can still store that 4xx answer and commit. ``deliver`` passes
the connection instead of the engine, and the domain code then runs its path for a
caller-owned transaction.

Work on a request transaction runs on that transaction's own capacity limiter, never the
shared default one: a request that holds a pool connection must always find a thread to
finish on, or requests queued for the pool behind it could hold every thread while it
waits for one.

**Wake-ups.** Work that recorded events (:func:`noclash.chat.events.collecting`) wakes
live readers once it has committed (:meth:`noclash.chat.wakeups.Hub.committed`): here for
work that owns its transaction, in the idempotency middleware after it commits a keyed
create. Never before the commit: a reader woken early would find nothing yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import anyio
from anyio import CapacityLimiter
from fastapi import Request
from sqlalchemy.engine import Connection, Engine

from noclash.chat import events
from noclash.db.engine import read_only

# Where the idempotency middleware leaves the request's transaction in ``scope["state"]``.
TRANSACTION_STATE = "noclash.transaction"

Render = Callable[[Any], Any]


class RequestTransaction:
    """A transaction opened (and committed or rolled back) by someone other than the route,
    when the route first needs it.

    Why not before the route runs: a route may have slow work to do before it touches the
    database (asking a platform whose access token it was given, resolving a webhook's
    host), and a transaction opened by then would be held across that work. On SQLite its
    first write holds the file's one write lock, so every other writer of the process
    would wait for a platform's answer.

    ``begin`` opens it, in the opener's own way (the idempotency middleware claims the
    request's key in it, and raises to stop the route when the key is decided otherwise);
    it runs once, at the route's first database call.
    """

    __slots__ = ("_begin", "_opening", "conn", "limiter")

    def __init__(
        self, begin: Callable[[], Awaitable[Connection]], limiter: CapacityLimiter
    ) -> None:
        self._begin = begin
        self._opening = anyio.Lock()
        self.limiter = limiter
        self.conn: Connection | None = None

    async def connection(self) -> Connection:
        """The transaction's connection, opened now if this is the first call."""
        async with self._opening:
            if self.conn is None:
                self.conn = await self._begin()
        return self.conn


def request_transaction(request: Request) -> RequestTransaction | None:
    state = request.scope.get("state")
    return state.get(TRANSACTION_STATE) if state else None


async def write(
    request: Request, work: Callable[..., Any], *args: Any, render: Render | None = None
) -> Any:
    """``work(conn, *args)`` in the request's transaction (a SAVEPOINT) or a new one."""
    return await _run(request, _in_new_transaction, _in_savepoint, work, args, render)


async def read(
    request: Request, work: Callable[..., Any], *args: Any, render: Render | None = None
) -> Any:
    """``work(conn, *args)`` on a read-only connection, or in the request's transaction."""
    return await _run(request, _on_read_only, _on_connection, work, args, render)


async def deliver(
    request: Request, work: Callable[..., Any], *args: Any, render: Render | None = None
) -> Any:
    """``work(bind, *args)``: the engine, or the request's transaction (a SAVEPOINT)."""
    return await _run(request, _on_connection, _in_savepoint, work, args, render)


async def _run(
    request: Request,
    alone: Callable[..., Any],
    in_request: Callable[..., Any],
    work: Callable[..., Any],
    args: tuple,
    render: Render | None,
) -> Any:
    tx = request_transaction(request)
    if tx is not None:  # whoever commits it wakes the readers (noclash.api.idempotency)
        conn = await tx.connection()
        return await anyio.to_thread.run_sync(
            in_request, conn, work, args, render, limiter=tx.limiter
        )
    # The worker thread runs in a copy of this context, so it records into this set.
    with events.collecting() as recorded:
        try:
            return await anyio.to_thread.run_sync(
                alone, request.app.state.engine, work, args, render
            )
        finally:
            # Also after an error: work that owns its transactions may have committed
            # some (a needless wake-up costs a reader one look; a missed one, seconds).
            if recorded or recorded.queued:
                request.app.state.hub.committed(recorded)


def reading(bind: Engine | Connection) -> AbstractContextManager[Connection]:
    """A connection to read on from ``bind``: the caller's own (left open), or a new
    read-only one. For :func:`deliver` work that reads before handing ``bind`` on."""
    if isinstance(bind, Connection):
        return nullcontext(bind)
    return read_only(bind).connect()


def writing(bind: Engine | Connection) -> AbstractContextManager[Connection]:
    """A transaction on ``bind``: the caller's own connection (already in one, left
    open), or a new one committed at the end. For :func:`deliver` work that does
    something before it writes (numbering events, which commits on its own)."""
    if isinstance(bind, Connection):
        return nullcontext(bind)
    return bind.begin()


# -- the thread side ----------------------------------------------------------------------
def _finish(value: Any, render: Render | None) -> Any:
    return value if render is None else render(value)


def _in_new_transaction(
    engine: Engine, work: Callable[..., Any], args: tuple, render: Render | None
) -> Any:
    with engine.begin() as conn:
        value = work(conn, *args)
    return _finish(value, render)


def _in_savepoint(
    conn: Connection, work: Callable[..., Any], args: tuple, render: Render | None
) -> Any:
    with conn.begin_nested():
        value = work(conn, *args)
    return _finish(value, render)


def _on_read_only(
    engine: Engine, work: Callable[..., Any], args: tuple, render: Render | None
) -> Any:
    with read_only(engine).connect() as conn:
        value = work(conn, *args)
    return _finish(value, render)


def _on_connection(
    bind: Engine | Connection, work: Callable[..., Any], args: tuple, render: Render | None
) -> Any:
    return _finish(work(bind, *args), render)


__all__ = [
    "TRANSACTION_STATE",
    "RequestTransaction",
    "deliver",
    "read",
    "reading",
    "request_transaction",
    "write",
    "writing",
]
