"""``/api/chatbots`` and the public view ``/api/public/chatbots/{public_token}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.responses import Response

from noclash.api.deps import CurrentUser, OptionalUser
from noclash.api.pagination import Page, PageDep, PageParams, page
from noclash.api.responses import Rendered
from noclash.api.schemas import StrictModel
from noclash.api.work import read, write
from noclash.chat import chatbots as chat
from noclash.chat.errors import Unauthenticated
from noclash.chat.users import User
from noclash.db.tables import chatbots, max_length

router = APIRouter(prefix="/api/chatbots", tags=["chatbots"])
public = APIRouter(prefix="/api/public/chatbots", tags=["chatbots"])


class ChatbotIn(StrictModel):
    name: str = Field(min_length=1, max_length=max_length(chatbots.c.name))
    slack_channel_id: str | None = Field(
        default=None, max_length=max_length(chatbots.c.slack_channel_id)
    )
    asana_project_id: str | None = Field(
        default=None, max_length=max_length(chatbots.c.asana_project_id)
    )
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


CHATBOT_OUT = Rendered(ChatbotOut)
CHATBOT = Rendered(ChatbotOut, 200)
CHATBOT_PAGE = Rendered(Page[ChatbotOut], 200)
PUBLIC_CHATBOT = Rendered(PublicChatbotOut, 200)


@router.post("", status_code=201, response_model=ChatbotOut)
async def create_chatbot(request: Request, body: ChatbotIn, user: CurrentUser) -> Response:
    """Create a chatbot; its public token is a fresh UUIDv4 under a unique index."""
    return await write(request, _create, user.id, body, render=CHATBOT_OUT)


def _create(conn: Connection, owner_id: UUID, body: ChatbotIn) -> chat.Chatbot:
    return chat.create_chatbot(conn, owner_id=owner_id, **body.model_dump())


@router.get("", response_model=Page[ChatbotOut])
async def list_chatbots(request: Request, params: PageDep, user: CurrentUser) -> Response:
    return await read(request, _list, user.id, params, render=CHATBOT_PAGE)


def _list(conn: Connection, owner_id: UUID, params: PageParams) -> dict:
    rows = chat.list_chatbots(conn, owner_id=owner_id, after=params.after, limit=params.fetch)
    return page(rows, params)


@router.get("/{chatbot_id}", response_model=ChatbotOut)
async def get_chatbot(request: Request, chatbot_id: str, user: CurrentUser) -> Response:
    return await read(request, _get, chatbot_id, user.id, render=CHATBOT)


def _get(conn: Connection, chatbot_id: str, owner_id: UUID) -> Any:
    return chat.get_chatbot(conn, chatbot_id, owner_id=owner_id)


@public.get("/{public_token}", response_model=PublicChatbotOut)
async def public_chatbot(request: Request, public_token: str, user: OptionalUser) -> Response:
    """What a widget needs; a malformed or unknown token is a 404."""
    return await read(request, _public, public_token, user, render=PUBLIC_CHATBOT)


def _public(conn: Connection, public_token: str, user: User | None) -> Any:
    row = chat.get_chatbot_by_public_token(conn, public_token)
    if row.require_auth and user is None:
        raise Unauthenticated("this chatbot requires Authorization: Bearer <token>")
    return row
