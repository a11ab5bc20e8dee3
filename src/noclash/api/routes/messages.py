"""``/api/conversations/{id}/messages``: a conversation's messages and an agent's replies.

Inbound customer messages arrive through the channels (webhooks, the widget, the generic
inbound); this resource lists them and stores the agent's outbound replies.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.responses import Response

from noclash.api.deps import CurrentUser, SettingsDep
from noclash.api.pagination import Page, PageDep, PageParams, page
from noclash.api.problems import ProblemType
from noclash.api.responses import Rendered, problems
from noclash.api.schemas import StrictModel, check_text
from noclash.api.work import read, write
from noclash.chat import messages
from noclash.db.tables import Direction

router = APIRouter(prefix="/api/conversations/{conversation_id}/messages", tags=["messages"])


class MessageOut(BaseModel):
    id: UUID
    conversation_id: UUID
    connection_id: UUID | None
    platform_message_id: str | None
    direction: Direction
    text: str
    sent_at: datetime | None
    created_at: datetime


class ReplyIn(StrictModel):
    text: str = Field(min_length=1)


MESSAGE_OUT = Rendered(MessageOut)
MESSAGE_PAGE = Rendered(Page[MessageOut], 200)


@router.get("", response_model=Page[MessageOut])
async def list_messages(
    request: Request, conversation_id: str, params: PageDep, user: CurrentUser
) -> Response:
    return await read(request, _list, conversation_id, user.id, params, render=MESSAGE_PAGE)


def _list(conn: Connection, conversation_id: str, owner_id: UUID, params: PageParams) -> dict:
    rows = messages.list_messages(
        conn, conversation_id, owner_id=owner_id, after=params.after, limit=params.fetch
    )
    return page(rows, params)


@router.post(
    "",
    status_code=201,
    response_model=MessageOut,
    responses=problems(ProblemType.CONFLICT, s409="The conversation is closed"),
)
async def reply(
    request: Request,
    conversation_id: str,
    body: ReplyIn,
    user: CurrentUser,
    settings: SettingsDep,
) -> Response:
    """An agent's outbound reply (stored; delivery to the platform is not part of noclash)."""
    check_text(body.text, settings)
    return await write(request, _reply, conversation_id, user.id, body.text, render=MESSAGE_OUT)


def _reply(conn: Connection, conversation_id: str, owner_id: UUID, text: str) -> object:
    return messages.send_reply(conn, conversation_id, owner_id=owner_id, text=text)
