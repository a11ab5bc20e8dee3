"""Live event streams, as Server-Sent Events (FastAPI's own SSE support).

- ``GET /api/stream``: an agent's view, the events of one of the caller's chatbots
  (``chatbot_id``) or of all of them (a chatbot made later included);
- ``GET /api/widget/{public_token}/sessions/{session_id}/stream``: a visitor's view, the
  messages and lifecycle of this session's conversations, without anything internal
  (:func:`noclash.chat.sessions.visitor_event`).

Each event is ``id:`` its id, ``event:`` its type, ``data:`` its envelope as JSON.

**What a stream reads.** Only the events table, in ``seq`` order (:mod:`noclash.chat.events`):
after each batch it remembers the last ``seq`` it sent and reads what comes after it. A
client that reconnects with ``Last-Event-ID`` (the header, or the ``last_event_id``
parameter for clients that cannot set headers) starts after that event's ``seq``: every
event it missed, in order, once. An id that is not an event of this stream (unknown,
malformed, another scope) starts live, like no id: from the latest ``seq`` at connect;
but an event id older than the retention's horizon (``NOCLASH_EVENT_RETENTION_DAYS``) that
is gone starts at the first event kept, since all of those came after it.

**When it reads.** When the process's hub wakes it (:mod:`noclash.chat.wakeups`: a commit
here, or a NOTIFY from another process on PostgreSQL), and at least every
``NOCLASH_STREAM_REREAD_SECONDS`` anyway. A wake-up is only latency: the table is read
every time, so a lost one delays events, never loses them. A stream holds no database
connection while it waits.

**Keep-alive.** After ``NOCLASH_STREAM_PING_SECONDS`` (15) with nothing sent, a ``: ping``
comment; FastAPI's SSE support sends the same comment after 15 s of silence on its own,
which stays underneath (a read stuck behind the database still pings).

**The end.** A client that leaves is seen at once (the server listens for the disconnect)
and its stream ends by cancellation: a read under way finishes in its thread, and the
wake-up subscription, held by a dependency with ``yield``, is dropped when the request's
exit stack unwinds. Not in the generator's ``finally``: a generator cancelled while it
waits at a ``yield`` is closed only when the garbage collector gets to it.

**The database away.** A read error while streaming is logged once and retried at the
re-read interval, with pings meanwhile: the stream stays open, because a browser's
EventSource gives up for good on an error status when it reconnects.

Access is checked before the first byte (the route's dependencies): 401, 404 and 503 are
ordinary problem answers, never a broken stream.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import anyio
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from noclash.api.deps import CurrentUser, OptionalUser, bearer_digest, still_valid
from noclash.api.errors import Throttled
from noclash.api.pagination import ID_OR_EMPTY, optional_id
from noclash.api.problems import ProblemType
from noclash.api.responses import problems
from noclash.api.work import deliver, reading
from noclash.chat import events
from noclash.chat import sessions as chat
from noclash.chat.chatbots import get_chatbot
from noclash.chat.errors import Unauthenticated
from noclash.chat.users import User
from noclash.chat.wakeups import Hub, Subscription
from noclash.config import Settings
from noclash.db.engine import read_only
from noclash.db.tables import chatbots, sessions
from noclash.unique.ids import parse_uuid

log = logging.getLogger("noclash.api")

router = APIRouter(prefix="/api/stream", tags=["events"])
widget = APIRouter(prefix="/api/widget/{public_token}/sessions", tags=["widget"])

# Events read and sent per look; a longer backlog is read in several looks.
BATCH = 200
DATABASE_ERRORS = (DBAPIError, PoolTimeout)
PING = ServerSentEvent(comment="ping")
# Streams one widget session may hold open in one process: a visitor's tabs, not every
# connection the server takes (NOCLASH_MAX_CONNECTIONS) held by one anonymous client.
STREAMS_PER_SESSION = 4
# Worker threads the streams' reads take at most at once, apart from the requests' (anyio's
# default limiter, 40): a thousand streams re-reading never queue the API behind them.
STREAM_READ_THREADS = 8

Shape = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class Feed:
    """What one stream reads: ``scope`` (a WHERE clause on events), after ``start`` (a
    ``seq``), shaped by ``shape``. ``chatbots``: whose commits wake it (None: anyone's);
    ``owner_id``: refresh ``chatbots`` from the owner's current chatbots now and then."""

    scope: Any
    start: int
    shape: Shape
    chatbots: frozenset[UUID] | None
    owner_id: UUID | None = None
    # The hash of the bearer token the stream was opened with: the stream ends when that
    # token no longer holds (revoked, rotated, its user deleted), as a new request would
    # then be a 401. None: a visitor's stream without a token.
    token_digest: str | None = None
    # What the stream follows, read again now and then: once it is gone (the chatbot or
    # the session deleted), the stream ends, and the client's reconnect learns why (404)
    # instead of waiting on a stream nothing will ever reach again.
    exists: sa.Select[Any] | None = None


@dataclass(frozen=True)
class Following:
    """A stream's feed and its wake-up flag, both ready before the first byte."""

    feed: Feed
    subscription: Subscription


@dataclass(frozen=True)
class _Look:
    rows: list[Any]
    chatbots: frozenset[UUID] | None
    gone: bool = False


LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="The id of the last event received: the stream resumes after it, "
        "with every event missed, in order. Another id starts live.",
    ),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(description="Last-Event-ID for clients that cannot set headers (the header wins)."),
]


def _start(
    conn: Connection, scope: Any, last_event_id: str | None, horizon: datetime | None
) -> int:
    """Where a stream starts: after ``last_event_id`` if it is an event of ``scope``; from
    the first event kept if it names one the retention rule may have deleted (made before
    ``horizon``: every event the client missed that still exists is after it); else at
    the latest ``seq`` (live)."""
    event_id = parse_uuid(last_event_id.strip()) if last_event_id else None
    if event_id is None:
        return events.latest(conn)
    found = events.position(conn, event_id, scope)
    if found is not None:
        return found
    return 0 if events.may_be_pruned(event_id, horizon) else events.latest(conn)


def _horizon(request: Request) -> datetime | None:
    return events.retention_horizon(request.app.state.settings.event_retention_days)


# -- opening (the dependencies: every refusal before the first byte) ----------------------
def _hub(request: Request) -> Hub:
    return request.app.state.hub


def _agent_feed(
    bind: Engine | Connection,
    hub: Hub,
    owner_id: UUID,
    chatbot_id: UUID | None,
    last: str | None,
    horizon: datetime | None,
) -> Feed:
    with reading(bind) as conn:
        exists = None
        if chatbot_id is not None:
            ids = frozenset({get_chatbot(conn, chatbot_id, owner_id=owner_id).id})
            scope, owner = events.of_chatbots(list(ids)), None
            exists = sa.select(chatbots.c.id).where(chatbots.c.id.in_(ids))
        else:
            ids = frozenset(conn.scalars(events.owned_chatbots(owner_id)))
            scope, owner = events.of_owner(owner_id), owner_id
    # Numbered before the start is read: an event committed before the connect is then
    # either before the start or read after it, never lost between the two.
    hub.sequence()
    with reading(bind) as conn:
        start = _start(conn, scope, last, horizon)
    return Feed(scope, start, events.envelope, ids, owner, exists=exists)


async def agent_feed(
    request: Request,
    user: CurrentUser,
    chatbot_id: str | None = Query(
        None, description="One of your chatbots (default: all).", json_schema_extra=ID_OR_EMPTY
    ),
    last_event_id: LastEventIdQuery = None,
    last_event_id_header: LastEventIdHeader = None,
) -> Feed:
    last = last_event_id_header or last_event_id
    # As the pull API reads it: empty is all of them (``GET /api/stream?chatbot_id=``, a
    # URL template left blank, was a 404 that a browser's EventSource never retries), and
    # what is not an id is a 422 naming it.
    chosen = optional_id(chatbot_id, "chatbot_id", "a chatbot id")
    work = (_hub(request), user.id, chosen, last, _horizon(request))
    feed = await deliver(request, _agent_feed, *work)
    return replace(feed, token_digest=bearer_digest(request.scope))


def _visitor_feed(
    bind: Engine | Connection,
    hub: Hub,
    public_token: str,
    session_id: str,
    user: User | None,
    last: str | None,
    horizon: datetime | None,
) -> Feed:
    with reading(bind) as conn:
        session = chat.get_session(conn, public_token, session_id)
        if session.require_auth and user is None:
            raise Unauthenticated("this chatbot requires Authorization: Bearer <token>")
    scope = chat.session_events(session)
    hub.sequence()
    with reading(bind) as conn:
        start = _start(conn, scope, last, horizon)
    exists = sa.select(sessions.c.session_id).where(sessions.c.session_id == session.session_id)
    return Feed(scope, start, chat.visitor_event, frozenset({session.chatbot_id}), exists=exists)


async def visitor_feed(
    request: Request,
    public_token: str,
    session_id: str,
    user: OptionalUser,
    last_event_id: LastEventIdQuery = None,
    last_event_id_header: LastEventIdHeader = None,
) -> Feed:
    last = last_event_id_header or last_event_id
    work = (_hub(request), public_token, session_id, user, last, _horizon(request))
    feed = await deliver(request, _visitor_feed, *work)
    # A signed-in visitor's stream ends with its token too (a require_auth chatbot's).
    return replace(feed, token_digest=bearer_digest(request.scope) if user else None)


async def agent_stream(
    request: Request, feed: Annotated[Feed, Depends(agent_feed)]
) -> AsyncIterator[Following]:
    with _hub(request).subscribe(feed.chatbots) as subscription:
        yield Following(feed, subscription)


async def visitor_stream(
    request: Request, session_id: str, feed: Annotated[Feed, Depends(visitor_feed)]
) -> AsyncIterator[Following]:
    # Counted by the session, not by the path's text: the routes take an id in either
    # case and without dashes, and a count by spelling gave each of those billions of
    # spellings STREAMS_PER_SESSION streams of its own. visitor_feed found the session,
    # so the id parses.
    session_id = str(parse_uuid(session_id))
    opened = _visitor_streams(request)
    if opened[session_id] >= STREAMS_PER_SESSION:
        raise Throttled(
            f"this session already has {STREAMS_PER_SESSION} streams open here; "
            "close one (a tab) or retry later",
            retry_after=5,
        )
    opened[session_id] += 1
    try:
        with _hub(request).subscribe(feed.chatbots) as subscription:
            yield Following(feed, subscription)
    finally:
        opened[session_id] -= 1
        if not opened[session_id]:
            del opened[session_id]


def _visitor_streams(request: Request) -> Counter[str]:
    """The widget streams open in this process, by session (kept on the app)."""
    state = request.app.state
    if not hasattr(state, "visitor_streams"):
        state.visitor_streams = Counter()
    return state.visitor_streams


def _stream_reads(request: Request) -> anyio.CapacityLimiter:
    """The threads the streams of this process read with (see STREAM_READ_THREADS)."""
    state = request.app.state
    if not hasattr(state, "stream_reads"):
        state.stream_reads = anyio.CapacityLimiter(STREAM_READ_THREADS)
    return state.stream_reads


# -- the routes ---------------------------------------------------------------------------
@router.get("", response_class=EventSourceResponse, responses=problems(401, 404, 422))
async def stream_events(
    request: Request, following: Annotated[Following, Depends(agent_stream)]
) -> AsyncIterator[ServerSentEvent]:
    """Your chatbots' events, live, as Server-Sent Events (``id:`` the event id,
    ``event:`` its type, ``data:`` the envelope of ``GET /api/events``). With
    ``Last-Event-ID``, every event after that one first, in order."""
    async with aclosing(follow(request, following)) as items:
        async for item in items:
            yield item


@widget.get(
    "/{session_id}/stream",
    response_class=EventSourceResponse,
    responses=problems(401, 404, ProblemType.RATE_LIMITED),
)
async def stream_session(
    request: Request, following: Annotated[Following, Depends(visitor_stream)]
) -> AsyncIterator[ServerSentEvent]:
    """The visitor's conversation, live: its messages (both directions) and its status,
    as Server-Sent Events. Nothing of any other visitor, nothing internal."""
    async with aclosing(follow(request, following)) as items:
        async for item in items:
            yield item


# -- following ----------------------------------------------------------------------------
def _look(engine: Engine, hub: Hub, feed: Feed, after: int, refresh: bool) -> _Look:
    """Number what committed, then read the next batch (a worker thread's call)."""
    hub.sequence()
    with read_only(engine).connect() as conn:
        rows = events.read(conn, feed.scope, after=after, limit=BATCH)
        chatbots_now = None
        if refresh and feed.owner_id is not None:
            chatbots_now = frozenset(conn.scalars(events.owned_chatbots(feed.owner_id)))
        gone = refresh and feed.exists is not None and conn.execute(feed.exists).first() is None
    return _Look(rows, chatbots_now, gone)


def _sse(shape: Shape, row: Any) -> ServerSentEvent:
    body = json.dumps(shape(row), ensure_ascii=False, separators=(",", ":"))
    return ServerSentEvent(id=str(row.id), event=row.type, raw_data=body)


async def follow(request: Request, following: Following) -> AsyncIterator[ServerSentEvent]:
    """The stream: read, send, wait for a wake-up (or the re-read interval), again."""
    hub = _hub(request)
    engine: Engine = request.app.state.engine
    settings: Settings = request.app.state.settings
    ping, reread = settings.stream_ping_seconds, settings.stream_reread_seconds
    feed, subscription = following.feed, following.subscription
    reads = _stream_reads(request)
    position = feed.start
    quiet_since = anyio.current_time()
    refresh, failing = False, False
    while True:
        if feed.token_digest is not None and not await _holds(request, feed.token_digest):
            # Ends here: the client's reconnect is then answered 401, as any request is.
            log.info("a stream's token no longer holds (revoked or rotated): stream ended")
            return
        subscription.clear()  # a wake-up during the read makes the next wait short
        look: _Look | None = None
        try:
            look = await anyio.to_thread.run_sync(
                _look, engine, hub, feed, position, refresh, limiter=reads
            )
        except DATABASE_ERRORS as exc:
            if not failing:
                log.warning("a stream cannot read events (%s); retrying", _short(exc))
            failing = True
        if look is not None:
            if failing:
                log.info("a stream reads events again")
                failing = False
            for row in look.rows:
                yield _sse(feed.shape, row)
                position = row.seq
            if look.gone:
                log.info("what a stream follows was deleted: stream ended")
                return
            if look.rows:
                quiet_since = anyio.current_time()
            if look.chatbots is not None:
                subscription.chatbots = look.chatbots
            if len(look.rows) >= BATCH:
                continue  # more waiting: no pause
        until_ping = quiet_since + ping - anyio.current_time()
        if until_ping <= 0:
            yield PING
            quiet_since, until_ping = anyio.current_time(), ping
        woken = await subscription.wait(min(reread, until_ping))
        # A look nobody asked for also learns the owner's chatbots made meanwhile.
        refresh = not woken


async def _holds(request: Request, digest: str) -> bool:
    """Whether the stream's token still holds; a database that cannot say ends nothing
    (the stream's own reads report the outage)."""
    try:
        return await still_valid(request.scope, digest)
    except DATABASE_ERRORS:
        return True


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["Feed", "follow", "router", "widget"]
