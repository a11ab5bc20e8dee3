"""``/api/chatbots`` and the public view ``/api/public/chatbots/{public_token}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from starlette.responses import Response

from noclash.api.deps import current_user, get_engine, optional_user
from noclash.api.pagination import PageParams, page, page_params
from noclash.api.responses import Rendered
from noclash.api.schemas import StrictModel
from noclash.chat import chatbots as chat
from noclash.chat.errors import Unauthenticated
from noclash.chat.users import User
from noclash.db.engine import read_only

router = APIRouter(tags=["chatbots"])


class ChatbotIn(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    slack_channel_id: str | None = Field(default=None, max_length=200)
    asana_project_id: str | None = Field(default=None, max_length=200)
    require_auth: bool = False


class ChatbotOut(BaseModel):
    id: UUID
    name: str
    public_token: UUID
    require_auth: bool
    slack_channel_id: str | None
    asana_project_id: str | None
    created_at: datetime


class PublicChatbotOut(BaseModel):
    name: str
    public_token: UUID
    require_auth: bool


class ChatbotPage(BaseModel):
    items: list[ChatbotOut]
    next_cursor: str | None


def render(row: Any) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "public_token": row.public_token,
        "require_auth": row.require_auth,
        "slack_channel_id": row.slack_channel_id,
        "asana_project_id": row.asana_project_id,
        "created_at": row.created_at,
    }


CHATBOT_OUT = Rendered(ChatbotOut)


@router.post("/api/chatbots", status_code=201, response_model=ChatbotOut)
async def create_chatbot(
    request: Request, body: ChatbotIn, user: User = Depends(current_user)
) -> Response:
    """Create a chatbot; its public token is a fresh UUIDv4 under a unique index."""
    # async with one explicit worker-thread call that runs the transaction and renders the
    # body: a synchronous route would pay a second thread-pool hop for FastAPI's
    # response-model validation (noclash.api.responses). The docstring is the API doc.
    engine: Engine = request.app.state.engine
    return await anyio.to_thread.run_sync(_create_chatbot, engine, user.id, body)


def _create_chatbot(engine: Engine, owner_id: UUID, body: ChatbotIn) -> Response:
    with engine.begin() as conn:
        row = chat.create_chatbot(conn, owner_id=owner_id, **body.model_dump())
    return CHATBOT_OUT.response(row)


@router.get("/api/chatbots", response_model=ChatbotPage)
def list_chatbots(
    params: PageParams = Depends(page_params),
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    with read_only(engine).connect() as conn:
        rows = chat.list_chatbots(
            conn, owner_id=user.id, after=params.after, limit=params.limit + 1
        )
    return page(rows, params, render)


@router.get("/api/chatbots/{chatbot_id}", response_model=ChatbotOut)
def get_chatbot(
    chatbot_id: str,
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    with read_only(engine).connect() as conn:
        return render(chat.get_chatbot(conn, chatbot_id, owner_id=user.id))


@router.get("/api/public/chatbots/{public_token}", response_model=PublicChatbotOut)
def public_chatbot(
    public_token: str,
    user: User | None = Depends(optional_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    """What a widget needs; a malformed or unknown token is a 404."""
    with read_only(engine).connect() as conn:
        row = chat.get_chatbot_by_public_token(conn, public_token)
    if row.require_auth and user is None:
        raise Unauthenticated("this chatbot requires Authorization: Bearer <token>")
    return {"name": row.name, "public_token": row.public_token, "require_auth": row.require_auth}
