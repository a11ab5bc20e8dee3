"""``/api/conversations``: list, read, lifecycle (close, snooze, reopen) and replies.

Every endpoint resolves ownership through ``chatbots.owner_id``: another user's
conversation is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy.engine import Engine
from starlette.responses import Response

from noclash.api.deps import current_user, get_engine
from noclash.api.pagination import PageParams, page, page_params
from noclash.api.responses import Rendered
from noclash.api.schemas import StrictModel
from noclash.chat import conversations as convs
from noclash.chat import lifecycle, messages
from noclash.chat.chatbots import get_chatbot
from noclash.chat.errors import InvalidInput
from noclash.chat.users import User
from noclash.config import Settings
from noclash.db.engine import read_only

router = APIRouter(tags=["conversations"])

Status = Literal["OPEN", "SNOOZED", "CLOSED"]


class ConversationOut(BaseModel):
    id: UUID
    chatbot_id: UUID
    connection_id: UUID | None
    psid: str | None
    status: Status
    title: str | None
    slug: str
    last_message_at: datetime | None
    snoozed_until: datetime | None
    created_at: datetime
    closed_at: datetime | None


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


class MessageOut(BaseModel):
    id: UUID
    conversation_id: UUID
    connection_id: UUID | None
    platform_message_id: str | None
    direction: Literal["in", "out"]
    text: str
    sent_at: datetime | None
    created_at: datetime


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


class SnoozeIn(StrictModel):
    until: AwareDatetime | None = None


class ReplyIn(StrictModel):
    text: str = Field(min_length=1)


def render(row: Any) -> dict:
    return {name: getattr(row, name) for name in ConversationOut.model_fields}


def render_message(row: Any) -> dict:
    return {name: getattr(row, name) for name in MessageOut.model_fields}


MESSAGE_OUT = Rendered(MessageOut)


@router.get("/api/conversations", response_model=ConversationPage)
def list_conversations(
    chatbot_id: str | None = Query(None),
    status: Status | None = Query(None),
    psid: str | None = Query(None, max_length=200),
    params: PageParams = Depends(page_params),
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    """The caller's conversations, filtered, oldest first, by cursor."""
    with read_only(engine).connect() as conn:
        bot_id = get_chatbot(conn, chatbot_id, owner_id=user.id).id if chatbot_id else None
        rows = convs.list_conversations(
            conn, owner_id=user.id, chatbot_id=bot_id, status=status, psid=psid,
            after=params.after, limit=params.limit + 1,
        )  # fmt: skip
    return page(rows, params, render)


@router.get("/api/conversations/{conversation_id}", response_model=ConversationOut)
def get_conversation(
    conversation_id: str,
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    with read_only(engine).connect() as conn:
        return render(convs.get_conversation(conn, conversation_id, owner_id=user.id))


@router.post("/api/conversations/{conversation_id}/close", response_model=ConversationOut)
def close(
    conversation_id: str,
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    """Close; closing a closed conversation is a no-op 200. The next message opens a new one."""
    with engine.begin() as conn:
        return render(lifecycle.close(conn, conversation_id, owner_id=user.id))


@router.post("/api/conversations/{conversation_id}/snooze", response_model=ConversationOut)
def snooze(
    conversation_id: str,
    body: SnoozeIn | None = None,
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    """Snooze an active conversation; a new inbound message wakes it. CLOSED is a 409."""
    until = body.until if body else None
    with engine.begin() as conn:
        return render(lifecycle.snooze(conn, conversation_id, owner_id=user.id, until=until))


@router.post("/api/conversations/{conversation_id}/reopen", response_model=ConversationOut)
def reopen(
    conversation_id: str,
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    """Reopen; a 409 names the conversation already active for the same customer."""
    with engine.begin() as conn:
        return render(lifecycle.reopen(conn, conversation_id, owner_id=user.id))


@router.get("/api/conversations/{conversation_id}/messages", response_model=MessagePage)
def list_messages(
    conversation_id: str,
    params: PageParams = Depends(page_params),
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    with read_only(engine).connect() as conn:
        rows = messages.list_messages(
            conn, conversation_id, owner_id=user.id, after=params.after, limit=params.limit + 1
        )
    return page(rows, params, render_message)


@router.post(
    "/api/conversations/{conversation_id}/messages", status_code=201, response_model=MessageOut
)
async def reply(
    request: Request,
    conversation_id: str,
    body: ReplyIn,
    user: User = Depends(current_user),
) -> Response:
    """An agent's outbound reply (stored; delivery to the platform is not part of noclash)."""
    settings: Settings = request.app.state.settings
    if len(body.text) > settings.max_text_length:
        raise InvalidInput(
            f"text is longer than {settings.max_text_length} characters", field="text"
        )
    # One worker-thread call for the transaction and the rendering (noclash.api.responses).
    engine: Engine = request.app.state.engine
    return await anyio.to_thread.run_sync(_reply, engine, user.id, conversation_id, body.text)


def _reply(engine: Engine, owner_id: UUID, conversation_id: str, text: str) -> Response:
    with engine.begin() as conn:
        row = messages.send_reply(conn, conversation_id, owner_id=owner_id, text=text)
    return MESSAGE_OUT.response(render_message(row))
