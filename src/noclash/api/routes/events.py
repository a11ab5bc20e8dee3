"""``GET /api/events``: the pull API of a chatbot's events (and how a bot catches up);
``GET /api/events/{id}`` and ``POST /api/events/{id}/retry``: one event with its webhook
delivery, and sending it again; ``POST /api/chatbots/{id}/events/retry-failed``: every
failed webhook delivery of a chatbot sent again (:mod:`noclash.chat.event_deliveries`).

Events come in their one order (``seq``, given after commit: see
:mod:`noclash.chat.events`), after the event named by ``after``; ``next_cursor`` is the
``after`` of the next page. Before reading, this request numbers whatever has committed
without a number yet, so the answer never waits for a background process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection, Engine
from starlette.responses import Response

from noclash.api.deps import CurrentUser
from noclash.api.pagination import (
    CURSOR_ALIAS,
    ID_OR_EMPTY,
    MAX_LIMIT,
    Page,
    after_or_cursor,
    optional_id,
)
from noclash.api.problems import ProblemType
from noclash.api.responses import Rendered, link, problems
from noclash.api.schemas import StrictModel
from noclash.api.work import deliver, read, reading, write, writing
from noclash.chat import event_deliveries, events
from noclash.chat.chatbots import get_chatbot
from noclash.chat.errors import NotFound
from noclash.db.tables import DeliveryStatus, chatbots, conversations

router = APIRouter(prefix="/api/events", tags=["events"])
nested = APIRouter(prefix="/api/chatbots/{chatbot_id}/events", tags=["events"])


class EventOut(BaseModel):
    """One event: ``id`` is its name everywhere (``Noclash-Event-Id`` of a webhook, an SSE
    ``id:``), ``data`` depends on ``type`` (docs/events.md)."""

    id: UUID
    type: events.EventType
    chatbot_id: UUID
    conversation_id: UUID | None
    created_at: datetime
    data: dict[str, Any]


class EventDeliveryOut(BaseModel):
    """Where an event stands with its chatbot's webhook (docs/events.md)."""

    status: DeliveryStatus
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    next_attempt_at: datetime | None = Field(
        description="When the next attempt is due (null unless queued)."
    )


class EventWithDeliveryOut(EventOut):
    """An event and its webhook delivery (null: the webhook does not get it, or the
    chatbot had none when it happened)."""

    delivery: EventDeliveryOut | None


class RetryFailedIn(StrictModel):
    after: UUID | None = Field(
        None, description="An event id: only the failed events after it (default: all)."
    )


class RetriedOut(BaseModel):
    requeued: int = Field(description="Webhook deliveries queued again.")


EVENT_PAGE = Rendered(Page[EventOut], 200)
EVENT = Rendered(EventWithDeliveryOut, 200)
RETRIED = Rendered(RetriedOut, 200)


@router.get(
    "",
    response_model=Page[EventOut],
    responses={
        200: {
            "links": {
                "event": link("GET", "/api/events/{event_id}", "The first event and its delivery",
                              event_id="$response.body#/items/0/id"),
                "retry": link("POST", "/api/events/{event_id}/retry",
                              "Send the first event to the webhook again",
                              event_id="$response.body#/items/0/id"),
            }
        },
        **problems(
            ProblemType.NOT_FOUND,
            s404="chatbot_id or conversation_id is not yours, or after names no event of them",
        ),
    },
)  # fmt: skip
async def list_events(
    request: Request,
    user: CurrentUser,
    chatbot_id: str | None = Query(
        None, description="One of your chatbots (default: all).", json_schema_extra=ID_OR_EMPTY
    ),
    after: str | None = Query(
        None, description="An event id: only the events after it.", json_schema_extra=ID_OR_EMPTY
    ),
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description="Items per page."),
    cursor: str | None = CURSOR_ALIAS,
    conversation_id: str | None = Query(
        None,
        description="One conversation of your chatbots (default: all).",
        json_schema_extra=ID_OR_EMPTY,
    ),
    types: list[events.EventType] | None = Query(
        None,
        alias="type",
        description="Only events of this type (repeat for several). A page then holds "
        f"the matches among the next {events.TYPE_WINDOW:,} events, possibly none: "
        "follow next_cursor until it is null.",
    ),
) -> Response:
    """Your chatbots' events in order, after the event ``after``."""
    query = EventQuery(
        chatbot_id=optional_id(chatbot_id, "chatbot_id", "a chatbot id"),
        conversation_id=optional_id(conversation_id, "conversation_id", "a conversation id"),
        types=tuple(dict.fromkeys(types or ())),
        after=after_or_cursor(after, cursor, "an event id"),
        limit=limit,
        horizon=events.retention_horizon(request.app.state.settings.event_retention_days),
    )
    return await deliver(request, _list, user.id, query, render=EVENT_PAGE)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A page of the pull API, as asked."""

    chatbot_id: UUID | None = None
    conversation_id: UUID | None = None
    types: tuple[str, ...] = ()
    after: UUID | None = None
    limit: int = 50
    horizon: datetime | None = None


def _list(bind: Engine | Connection, owner_id: UUID, query: EventQuery) -> dict:
    if isinstance(bind, Engine):
        events.sequence_all(bind)
    with reading(bind) as conn:
        scope = _scope(conn, owner_id, query)
        position = 0
        if query.after is not None:
            found = events.position(conn, query.after, scope)
            if found is None and not events.may_be_pruned(query.after, query.horizon):
                raise NotFound("after names no event of these chatbots")
            # An event the retention rule deleted: every event kept came after it.
            position = found if found is not None else 0
        if not query.types:
            rows, edge = events.read(conn, scope, after=position, limit=query.limit + 1), None
        else:
            rows, edge = events.read_types(
                conn, scope, query.types, after=position, limit=query.limit + 1
            )
    shown = rows[: query.limit]
    if len(rows) > query.limit:
        cursor: UUID | None = shown[-1].id
    else:
        # Fewer matches than asked among a full window: the next page starts after it.
        cursor = edge
    return {
        "items": [events.envelope(r) for r in shown],
        "next_cursor": None if cursor is None else str(cursor),
    }


# Up to this many chatbots, "all of the caller's" is a list of ids in the query (the
# planner then reads each chatbot's own (chatbot_id, seq) index); beyond it, a subquery of
# the owner's chatbots. One bound parameter per id would otherwise pass the driver's limit
# (65,535 with psycopg, 250,000 with SQLite): every page was a 503 for ever.
LISTED_CHATBOTS = 1000


def _scope(conn: Connection, owner_id: UUID, query: EventQuery) -> Any:
    """The WHERE clause of the events asked for; NotFound for a chatbot or conversation
    that is not the caller's (or a conversation of another chatbot than the one named)."""
    if query.chatbot_id is not None:
        ids = [get_chatbot(conn, query.chatbot_id, owner_id=owner_id).id]
    else:
        ids = list(conn.scalars(sa.select(chatbots.c.id).where(chatbots.c.owner_id == owner_id)))
    if query.conversation_id is None:
        if len(ids) > LISTED_CHATBOTS:
            return events.of_owner(owner_id)
        return events.of_chatbots(ids)
    found = conn.execute(
        sa.select(conversations.c.chatbot_id).where(conversations.c.id == query.conversation_id)
    ).scalar()
    if found is None or found not in ids:
        raise NotFound("conversation_id is not a conversation of these chatbots")
    return events.of_conversation(query.conversation_id)


def event_view(row: Any) -> dict[str, Any]:
    """A row of :func:`noclash.chat.event_deliveries.with_delivery` as
    :class:`EventWithDeliveryOut` reads it."""
    m = row._mapping
    delivery = None
    if m["delivery_status"] is not None:
        delivery = {f: m[f"delivery_{f}"] for f in event_deliveries.DELIVERY_FIELDS}
        if delivery["status"] != DeliveryStatus.QUEUED:
            delivery["next_attempt_at"] = None  # a claim's lease end, or nothing to come
    return {**events.envelope(row), "delivery": delivery}


@router.get("/{event_id}", response_model=EventWithDeliveryOut, responses=problems(401, 404))
async def get_event(request: Request, event_id: str, user: CurrentUser) -> Response:
    """One of your events, as every reader gets it, with its webhook delivery."""
    return await read(request, _get, event_id, user.id, render=EVENT)


def _get(conn: Connection, event_id: str, owner_id: UUID) -> dict[str, Any]:
    return event_view(event_deliveries.get_event(conn, event_id, owner_id=owner_id))


@router.post(
    "/{event_id}/retry",
    response_model=EventWithDeliveryOut,
    responses=problems(
        401, 404, ProblemType.CONFLICT,
        s409="The chatbot has no webhook_url, the webhook never gets this event, or its "
        "delivery is being sent or was sent",
    ),
)  # fmt: skip
async def retry_event(request: Request, event_id: str, user: CurrentUser) -> Response:
    """Send the event to its chatbot's webhook again, now, with a fresh count of attempts:
    a failed delivery, or one waiting for its next attempt, is queued due now; an event
    the webhook never got (it was set later) gets a delivery. It goes with the same
    ``Noclash-Event-Id``, signed with the current secret, to the current ``webhook_url``."""
    return await write(request, _retry, event_id, user.id, render=EVENT)


def _retry(conn: Connection, event_id: str, owner_id: UUID) -> dict[str, Any]:
    return event_view(event_deliveries.retry_event(conn, event_id, owner_id=owner_id))


@nested.post(
    "/retry-failed",
    response_model=RetriedOut,
    responses=problems(
        401, 404, ProblemType.CONFLICT,
        s404="chatbot_id is not yours, or after names no event of it",
        s409="The chatbot has no webhook_url",
    ),
)  # fmt: skip
async def retry_failed(
    request: Request, chatbot_id: str, user: CurrentUser, body: RetryFailedIn | None = None
) -> Response:
    """Send every failed event of the chatbot to its webhook again (only those after the
    event ``after``, when given): for a bot back from an outage longer than its retries.
    Each is queued due now with a fresh count of attempts, and the dispatcher sends them
    in order per conversation. Safe to repeat: what is already queued again is not
    counted twice."""
    after = body.after if body is not None else None
    horizon = events.retention_horizon(request.app.state.settings.event_retention_days)
    work = (chatbot_id, user.id, after, horizon)
    return await deliver(request, _retry_failed, *work, render=RETRIED)


def _retry_failed(
    bind: Engine | Connection,
    chatbot_id: str,
    owner_id: UUID,
    after: UUID | None,
    horizon: datetime | None,
) -> dict[str, int]:
    if after is not None and isinstance(bind, Engine):
        events.sequence_all(bind)  # so that ``after`` has its place
    with writing(bind) as conn:
        count = event_deliveries.retry_failed(
            conn, chatbot_id, owner_id=owner_id, after=after, horizon=horizon
        )
    return {"requeued": count}
