"""``/api/chatbots/{id}/connections``, ``/api/connections/{id}`` and the generic inbound.

``POST /api/connections/{id}/inbound`` is the custom-channel door into the same inbound
path the platform webhooks use (:func:`noclash.chat.inbound.receive_message`): a relay of
your own posts each customer message with its own message id, and can retry as often as
it likes; ``duplicate`` tells it whether the message was already stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, Request, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy.engine import Engine

from noclash.api.deps import current_user, get_engine, get_settings
from noclash.api.pagination import PageParams, page, page_params
from noclash.api.responses import Rendered
from noclash.api.schemas import StrictModel
from noclash.chat import connections as chat
from noclash.chat.errors import InvalidInput
from noclash.chat.inbound import receive_message
from noclash.chat.users import User
from noclash.config import Settings
from noclash.db.engine import read_only

router = APIRouter(tags=["connections"])

Channel = Literal["messenger", "instagram", "telegram", "widget"]


class ConnectionIn(StrictModel):
    channel: Channel
    external_id: str = Field(min_length=1, max_length=200)
    secret: str | None = Field(default=None, min_length=1, max_length=256)


class ConnectionOut(BaseModel):
    id: UUID
    chatbot_id: UUID
    channel: Channel
    external_id: str
    # The secret is write-only: the API says whether one is set, never what it is.
    has_secret: bool
    created_at: datetime


class ConnectionPage(BaseModel):
    items: list[ConnectionOut]
    next_cursor: str | None


class InboundIn(StrictModel):
    psid: str = Field(min_length=1, max_length=200, description="The customer's id.")
    message_id: str = Field(min_length=1, max_length=300, description="Your dedupe key.")
    text: str = Field(min_length=1)
    username: str | None = Field(default=None, max_length=500)
    sent_at: AwareDatetime | None = None


class InboundOut(BaseModel):
    conversation_id: UUID
    message_id: UUID
    duplicate: bool
    created_conversation: bool


def render(row: Any) -> dict:
    return {
        "id": row.id,
        "chatbot_id": row.chatbot_id,
        "channel": row.channel,
        "external_id": row.external_id,
        "has_secret": row.secret is not None,
        "created_at": row.created_at,
    }


CONNECTION_OUT = Rendered(ConnectionOut)


@router.post(
    "/api/chatbots/{chatbot_id}/connections", status_code=201, response_model=ConnectionOut
)
async def create_connection(
    request: Request, chatbot_id: str, body: ConnectionIn, user: User = Depends(current_user)
) -> Response:
    """Connect a chatbot to a channel; (channel, external_id) taken is a 409 naming both."""
    # One worker-thread call for the transaction and the rendering (noclash.api.responses).
    engine: Engine = request.app.state.engine
    return await anyio.to_thread.run_sync(_create_connection, engine, user.id, chatbot_id, body)


def _create_connection(
    engine: Engine, owner_id: UUID, chatbot_id: str, body: ConnectionIn
) -> Response:
    with engine.begin() as conn:
        row = chat.create_connection(
            conn, chatbot_id=chatbot_id, owner_id=owner_id, **body.model_dump()
        )
    return CONNECTION_OUT.response(render(row))


@router.get("/api/chatbots/{chatbot_id}/connections", response_model=ConnectionPage)
def list_connections(
    chatbot_id: str,
    params: PageParams = Depends(page_params),
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    with read_only(engine).connect() as conn:
        rows = chat.list_connections(
            conn, chatbot_id=chatbot_id, owner_id=user.id, after=params.after,
            limit=params.limit + 1,
        )  # fmt: skip
    return page(rows, params, render)


@router.get("/api/connections/{connection_id}", response_model=ConnectionOut)
def get_connection(
    connection_id: str,
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
) -> dict:
    with read_only(engine).connect() as conn:
        return render(chat.get_connection(conn, connection_id, owner_id=user.id))


@router.post(
    "/api/connections/{connection_id}/inbound",
    response_model=InboundOut,
    responses={200: {"description": "Already stored (duplicate)"}, 201: {"description": "Stored"}},
)
def inbound(
    connection_id: str,
    body: InboundIn,
    response: Response,
    user: User = Depends(current_user),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict:
    """Deliver one customer message from a custom channel: 201 stored, 200 duplicate."""
    if len(body.text) > settings.max_text_length:
        raise InvalidInput(
            f"text is longer than {settings.max_text_length} characters", field="text"
        )
    with read_only(engine).connect() as conn:
        connection = chat.get_connection(conn, connection_id, owner_id=user.id)
    # The engine, not a connection: receive_message then owns its transaction, so a
    # burst for one customer shares the conversation's lock (see chat.inbound, Locks).
    result = receive_message(
        engine,
        connection_id=connection.id,
        psid=body.psid,
        platform_message_id=body.message_id,
        text=body.text,
        sent_at=body.sent_at,
        username=body.username,
    )
    response.status_code = 200 if result.duplicate else 201
    return {
        "conversation_id": result.conversation_id,
        "message_id": result.message_id,
        "duplicate": result.duplicate,
        "created_conversation": result.created_conversation,
    }
