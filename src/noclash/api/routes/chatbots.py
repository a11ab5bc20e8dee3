"""``/api/chatbots`` and the public view ``/api/public/chatbots/{public_token}``.

``PATCH /api/chatbots/{id}`` changes the fields it is given (absent: unchanged; ``null``
clears an optional one); ``DELETE /api/chatbots/{id}`` removes the chatbot with everything
it holds, in one transaction (:func:`noclash.chat.chatbots.delete_chatbot`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.responses import Response

from noclash.api.deps import CurrentUser, OptionalUser
from noclash.api.pagination import Page, PageDep, PageParams, page
from noclash.api.problems import ProblemType
from noclash.api.responses import Rendered, link, problems
from noclash.api.schemas import StrictModel
from noclash.api.work import read, write
from noclash.chat import chatbots as chat
from noclash.chat.errors import Unauthenticated
from noclash.chat.users import User
from noclash.db.tables import chatbots, max_length

router = APIRouter(prefix="/api/chatbots", tags=["chatbots"])
public = APIRouter(prefix="/api/public/chatbots", tags=["chatbots"])


# An origin as a browser sends it: scheme, host name or IPv4 address, a port of 0 to
# 65535 (a path, a wildcard or credentials would never match, and are refused).
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_ORIGIN = rf"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:{_PORT})?/?$"
Origin = Annotated[str, Field(pattern=_ORIGIN, max_length=300)]
ORIGINS_HELP = (
    "Web origins (https://shop.example) whose pages may use the widget API; "
    "null or absent: any origin."
)


class ChatbotIn(StrictModel):
    name: str = Field(min_length=1, max_length=max_length(chatbots.c.name))
    slack_channel_id: str | None = Field(
        default=None, max_length=max_length(chatbots.c.slack_channel_id)
    )
    asana_project_id: str | None = Field(
        default=None, max_length=max_length(chatbots.c.asana_project_id)
    )
    require_auth: bool = False
    allowed_origins: list[Origin] | None = Field(
        default=None, max_length=chat.MAX_ORIGINS, description=ORIGINS_HELP
    )


class ChatbotPatch(StrictModel):
    """The settings to change; a field left out stays as it is. ``name`` and
    ``require_auth`` cannot be null (their default here is never validated, an explicit
    null is); the optional ids can (null clears them). A new setting is one more field here
    and in :data:`noclash.chat.chatbots.EDITABLE`."""

    name: str = Field(default=None, min_length=1, max_length=max_length(chatbots.c.name))
    slack_channel_id: str | None = Field(
        default=None, max_length=max_length(chatbots.c.slack_channel_id)
    )
    asana_project_id: str | None = Field(
        default=None, max_length=max_length(chatbots.c.asana_project_id)
    )
    require_auth: bool = Field(default=None)
    allowed_origins: list[Origin] | None = Field(
        default=None, max_length=chat.MAX_ORIGINS, description=ORIGINS_HELP
    )


class ChatbotOut(BaseModel):
    id: UUID
    name: str
    public_token: UUID
    require_auth: bool
    slack_channel_id: str | None
    asana_project_id: str | None
    allowed_origins: list[str] | None
    created_at: datetime


class PublicChatbotOut(BaseModel):
    name: str
    public_token: UUID
    require_auth: bool


PUBLIC_TOKEN = "$response.body#/public_token"
CHATBOT_OUT = Rendered(ChatbotOut)
CHATBOT = Rendered(ChatbotOut, 200)
CHATBOT_PAGE = Rendered(Page[ChatbotOut], 200)
PUBLIC_CHATBOT = Rendered(PublicChatbotOut, 200)


@router.post(
    "",
    status_code=201,
    response_model=ChatbotOut,
    responses={
        201: {
            "links": {
                "public": link("GET", "/api/public/chatbots/{public_token}",
                               "What its widget shows", public_token=PUBLIC_TOKEN),
                "session": link("POST", "/api/widget/{public_token}/sessions",
                                "A visitor starts a session", public_token=PUBLIC_TOKEN),
            }
        },
        # The public token's unique index: 122 random bits, so in practice never.
        **problems(ProblemType.UNIQUE_VIOLATION),
    },
)  # fmt: skip
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


@router.patch("/{chatbot_id}", response_model=ChatbotOut)
async def update_chatbot(
    request: Request, chatbot_id: str, body: ChatbotPatch, user: CurrentUser
) -> Response:
    """Change a chatbot's settings; only the fields sent change (the public token never)."""
    changes = body.model_dump(exclude_unset=True)
    return await write(request, _update, chatbot_id, user.id, changes, render=CHATBOT)


def _update(conn: Connection, chatbot_id: str, owner_id: UUID, changes: dict) -> Any:
    return chat.update_chatbot(conn, chatbot_id, owner_id=owner_id, changes=changes)


@router.delete(
    "/{chatbot_id}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted, with its connections, conversations and messages"}},
)
async def delete_chatbot(request: Request, chatbot_id: str, user: CurrentUser) -> Response:
    """Delete a chatbot **and everything it holds**: its connections, widget sessions,
    conversations (with their slugs) and messages, in one transaction. Nothing of it can be
    read afterwards. To stop one channel and keep the history, delete the connection."""
    return await write(request, _delete, chatbot_id, user.id, render=_no_content)


def _delete(conn: Connection, chatbot_id: str, owner_id: UUID) -> None:
    chat.delete_chatbot(conn, chatbot_id, owner_id=owner_id)


def _no_content(_result: Any) -> Response:
    return Response(status_code=204)


@public.get("/{public_token}", response_model=PublicChatbotOut)
async def public_chatbot(request: Request, public_token: str, user: OptionalUser) -> Response:
    """What a widget needs; a malformed or unknown token is a 404."""
    return await read(request, _public, public_token, user, render=PUBLIC_CHATBOT)


def _public(conn: Connection, public_token: str, user: User | None) -> Any:
    row = chat.get_chatbot_by_public_token(conn, public_token)
    if row.require_auth and user is None:
        raise Unauthenticated("this chatbot requires Authorization: Bearer <token>")
    return row
