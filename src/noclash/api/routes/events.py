"""``GET /api/events``: the pull API of a chatbot's events (and how a bot catches up).

Events come in their one order (``seq``, given after commit: see
:mod:`noclash.chat.events`), after the event named by ``after``; ``next_cursor`` is the
``after`` of the next page. Before reading, this request numbers whatever has committed
without a number yet, so the answer never waits for a background process.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy.engine import Connection, Engine
from starlette.responses import Response

from noclash.api.deps import CurrentUser
from noclash.api.pagination import ID_OR_EMPTY, MAX_LIMIT, Page, optional_id
from noclash.api.problems import ProblemType
from noclash.api.responses import Rendered, problems
from noclash.api.work import deliver, reading
from noclash.chat import events
from noclash.chat.chatbots import get_chatbot
from noclash.chat.errors import NotFound
from noclash.db.tables import chatbots

router = APIRouter(prefix="/api/events", tags=["events"])


class EventOut(BaseModel):
    """One event: ``id`` is its name everywhere (``Noclash-Event-Id`` of a webhook, an SSE
    ``id:``), ``data`` depends on ``type`` (docs/events.md)."""

    id: UUID
    type: events.EventType
    chatbot_id: UUID
    conversation_id: UUID | None
    created_at: datetime
    data: dict[str, Any]


EVENT_PAGE = Rendered(Page[EventOut], 200)


@router.get(
    "",
    response_model=Page[EventOut],
    responses=problems(
        ProblemType.NOT_FOUND, s404="chatbot_id is not yours, or after names no event of it"
    ),
)
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
) -> Response:
    """Your chatbots' events in order, after the event ``after``."""
    bot = optional_id(chatbot_id, "chatbot_id", "a chatbot id")
    event = optional_id(after, "after", "an event id")
    return await deliver(request, _list, user.id, bot, event, limit, render=EVENT_PAGE)


def _list(
    bind: Engine | Connection,
    owner_id: UUID,
    chatbot_id: UUID | None,
    after: UUID | None,
    limit: int,
) -> dict:
    if isinstance(bind, Engine):
        events.sequence_all(bind)
    with reading(bind) as conn:
        if chatbot_id is not None:
            ids = [get_chatbot(conn, chatbot_id, owner_id=owner_id).id]
        else:
            ids = list(
                conn.scalars(sa.select(chatbots.c.id).where(chatbots.c.owner_id == owner_id))
            )
        scope = events.of_chatbots(ids)
        position = 0
        if after is not None:
            found = events.position(conn, after, scope)
            if found is None:
                raise NotFound("after names no event of these chatbots")
            position = found
        rows = events.read(conn, scope, after=position, limit=limit + 1)
    shown = rows[:limit]
    return {
        "items": [events.envelope(r) for r in shown],
        "next_cursor": str(shown[-1].id) if len(rows) > limit else None,
    }
