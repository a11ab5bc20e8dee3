"""Conversation creation with a title, renames, and lookups by slug (old slugs redirect).

- ``POST /api/chatbots/{id}/conversations`` ``{title?, psid?}``: 201 with a slug unique in
  the chatbot (plain when free, else a random suffix);
- ``PATCH /api/conversations/{id}`` ``{title}``: new title, slug recomputed (kept when the
  base is the same);
- ``GET /api/chatbots/{id}/conversations/by-slug/{slug}``: 200 for the current slug, 308 to
  the current slug for a former one, 404 otherwise.

A collision never reaches the client as an error: the slug rules absorb it. Another user's
chatbot or conversation is a 404, like one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote
from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from starlette.responses import Response

from noclash.api.deps import current_user, get_engine
from noclash.api.responses import Rendered
from noclash.api.schemas import StrictModel
from noclash.chat import slugs
from noclash.chat.chatbots import get_chatbot
from noclash.chat.conversations import insert_conversation
from noclash.chat.users import User
from noclash.db.engine import read_only

router = APIRouter(tags=["slugs"])

MAX_TITLE_LENGTH = 500
MAX_PSID_LENGTH = 200


class ConversationCreate(StrictModel):
    title: str | None = Field(default=None, max_length=MAX_TITLE_LENGTH)
    psid: str | None = Field(default=None, min_length=1, max_length=MAX_PSID_LENGTH)


class ConversationRename(StrictModel):
    title: str = Field(max_length=MAX_TITLE_LENGTH)


class SlugConversationOut(BaseModel):
    id: UUID
    chatbot_id: UUID
    connection_id: UUID | None
    psid: str | None
    status: Literal["OPEN", "SNOOZED", "CLOSED"]
    title: str | None
    slug: str
    last_message_at: datetime | None
    created_at: datetime


def render(row: Any) -> dict:
    return {name: getattr(row, name) for name in SlugConversationOut.model_fields}


CONVERSATION_OUT = Rendered(SlugConversationOut)


def by_slug_path(chatbot_id: UUID, slug: str) -> str:
    return f"/api/chatbots/{chatbot_id}/conversations/by-slug/{quote(slug, safe='')}"


@router.post(
    "/api/chatbots/{chatbot_id}/conversations",
    status_code=201,
    response_model=SlugConversationOut,
)
async def create_conversation(
    request: Request,
    chatbot_id: str,
    body: ConversationCreate,
    user: User = Depends(current_user),
) -> Response:
    """Create a conversation; its slug comes from the title and is unique in the chatbot."""
    # One worker-thread call for the transaction and the rendering (noclash.api.responses).
    engine: Engine = request.app.state.engine
    return await anyio.to_thread.run_sync(_create_conversation, engine, user.id, chatbot_id, body)


def _create_conversation(
    engine: Engine, owner_id: UUID, chatbot_id: str, body: ConversationCreate
) -> Response:
    with engine.begin() as conn:
        bot = get_chatbot(conn, chatbot_id, owner_id=owner_id)
        row, _created = insert_conversation(
            conn, chatbot_id=bot.id, psid=body.psid, title=body.title or None
        )
    return CONVERSATION_OUT.response(render(row))


@router.patch("/api/conversations/{conversation_id}", response_model=SlugConversationOut)
def rename_conversation(
    conversation_id: str,
    body: ConversationRename,
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    """Rename; the slug follows the title, the old slug keeps redirecting."""
    with engine.begin() as conn:
        row = slugs.rename_conversation(conn, conversation_id, owner_id=user.id, title=body.title)
    return render(row)


@router.get(
    "/api/chatbots/{chatbot_id}/conversations/by-slug/{slug}",
    response_model=SlugConversationOut,
    responses={308: {"description": "A former slug: Location is the current one"}},
)
def get_by_slug(
    chatbot_id: str,
    slug: str,
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> Any:
    """The conversation with this slug; a former slug answers 308 to the current one."""
    with read_only(engine).connect() as conn:
        row = slugs.resolve_slug(conn, chatbot_id, slug, owner_id=user.id)
    if row.slug != slug:
        return RedirectResponse(by_slug_path(row.chatbot_id, row.slug), status_code=308)
    return render(row)
