"""``/api/chatbots/{id}/connections``, ``/api/connections/{id}`` and the generic inbound.

``POST /api/connections/{id}/inbound`` is the custom-channel door into the same inbound
path the platform webhooks use (:func:`noclash.chat.inbound.receive_message`): a relay of
your own posts each customer message with its own message id, and can retry as often as
it likes; ``duplicate`` tells it whether the message was already stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection, Engine
from starlette.responses import Response

from noclash.api.deps import CurrentUser, SettingsDep
from noclash.api.pagination import Page, PageDep, PageParams, page
from noclash.api.problems import ProblemType
from noclash.api.responses import Rendered, link, problems
from noclash.api.schemas import StrictModel, check_text, publish_text_rules
from noclash.api.work import deliver, read, reading, write
from noclash.chat import connections as chat
from noclash.chat.inbound import InboundResult, receive_message
from noclash.db.tables import Channel, connections, conversations, max_length, messages

router = APIRouter(prefix="/api/connections", tags=["connections"])
nested = APIRouter(prefix="/api/chatbots/{chatbot_id}/connections", tags=["connections"])


def _secret_rule(schema: dict[str, Any]) -> None:
    """Publish the domain rule a schema can state: these channels need a secret."""
    publish_text_rules(schema)
    schema["if"] = {
        "properties": {"channel": {"enum": sorted(str(c) for c in chat.SECRET_REQUIRED)}}
    }
    schema["then"] = {"required": ["secret"], "properties": {"secret": {"type": "string"}}}


class ConnectionIn(StrictModel):
    """A connection; a telegram one needs its ``secret`` (the webhook's secret token)."""

    model_config = ConfigDict(json_schema_extra=_secret_rule)

    channel: Channel
    external_id: str = Field(min_length=1, max_length=max_length(connections.c.external_id))
    secret: str | None = Field(
        default=None, min_length=1, max_length=max_length(connections.c.secret)
    )


class ConnectionOut(BaseModel):
    id: UUID
    chatbot_id: UUID
    channel: Channel
    external_id: str
    # The secret is write-only: the API says whether one is set, never what it is.
    has_secret: bool
    created_at: datetime


class InboundIn(StrictModel):
    psid: str = Field(
        min_length=1, max_length=max_length(conversations.c.psid), description="The customer's id."
    )
    message_id: str = Field(
        min_length=1,
        max_length=max_length(messages.c.platform_message_id),
        description="Your dedupe key.",
    )
    text: str = Field(min_length=1)
    username: str | None = Field(default=None, max_length=max_length(conversations.c.title))
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
CONNECTION = Rendered(ConnectionOut, 200)
CONNECTION_PAGE = Rendered(Page[ConnectionOut], 200)
INBOUND_OUT = Rendered(InboundOut)


@nested.post(
    "",
    status_code=201,
    response_model=ConnectionOut,
    responses={
        201: {
            "links": {
                "telegram": link(
                    "POST",
                    "/webhooks/telegram/{connection_id}",
                    "Telegram delivers an update (a telegram connection)",
                    connection_id="$response.body#/id",
                ),
                "inbound": link(
                    "POST",
                    "/api/connections/{connection_id}/inbound",
                    "A relay delivers a message (a custom connection)",
                    connection_id="$response.body#/id",
                ),
            }
        },
        **problems(
            ProblemType.UNIQUE_VIOLATION,
            s409="The channel and external_id are taken: fields names both",
        ),
    },
)
async def create_connection(
    request: Request, chatbot_id: str, body: ConnectionIn, user: CurrentUser
) -> Response:
    """Connect a chatbot to a channel; (channel, external_id) taken is a 409 naming both."""
    return await write(request, _create, user.id, chatbot_id, body, render=CONNECTION_OUT)


def _create(conn: Connection, owner_id: UUID, chatbot_id: str, body: ConnectionIn) -> dict:
    row = chat.create_connection(
        conn, chatbot_id=chatbot_id, owner_id=owner_id, **body.model_dump(mode="json")
    )
    return render(row)


@nested.get("", response_model=Page[ConnectionOut])
async def list_connections(
    request: Request, chatbot_id: str, params: PageDep, user: CurrentUser
) -> Response:
    return await read(request, _list, chatbot_id, user.id, params, render=CONNECTION_PAGE)


def _list(conn: Connection, chatbot_id: str, owner_id: UUID, params: PageParams) -> dict:
    rows = chat.list_connections(
        conn, chatbot_id=chatbot_id, owner_id=owner_id, after=params.after, limit=params.fetch
    )
    return page(rows, params, render)


@router.get("/{connection_id}", response_model=ConnectionOut)
async def get_connection(request: Request, connection_id: str, user: CurrentUser) -> Response:
    return await read(request, _get, connection_id, user.id, render=CONNECTION)


def _get(conn: Connection, connection_id: str, owner_id: UUID) -> dict:
    return render(chat.get_connection(conn, connection_id, owner_id=owner_id))


@router.post(
    "/{connection_id}/inbound",
    response_model=InboundOut,
    responses={200: {"description": "Already stored (duplicate)"}, 201: {"description": "Stored"}},
)
async def inbound(
    request: Request,
    connection_id: str,
    body: InboundIn,
    user: CurrentUser,
    settings: SettingsDep,
) -> Response:
    """Deliver one customer message from a custom channel: 201 stored, 200 duplicate."""
    check_text(body.text, settings)
    return await deliver(request, _inbound, user.id, connection_id, body, render=_inbound_out)


def _inbound(
    bind: Engine | Connection, owner_id: UUID, connection_id: str, body: InboundIn
) -> InboundResult:
    with reading(bind) as conn:
        connection = chat.get_connection(conn, connection_id, owner_id=owner_id)
    # Given the engine, receive_message owns its transactions, so a burst for one customer
    # shares the conversation's lock (see chat.inbound, Locks); given the request's
    # connection, it runs its path for a transaction the caller commits.
    return receive_message(
        bind,
        connection_id=connection.id,
        psid=body.psid,
        platform_message_id=body.message_id,
        text=body.text,
        sent_at=body.sent_at,
        username=body.username,
    )


def _inbound_out(result: InboundResult) -> Response:
    return INBOUND_OUT.response(result, 200 if result.duplicate else 201)


@router.delete(
    "/{connection_id}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted; its conversations and messages are kept, detached"}},
)
async def delete_connection(request: Request, connection_id: str, user: CurrentUser) -> Response:
    """Delete a connection and **keep its history**: in one transaction its active
    conversations are closed, its conversations and messages are detached
    (``connection_id`` becomes null, ``psid`` stays) and its widget sessions end. Nothing
    more arrives through it; the conversations stay readable. Deleting the chatbot is what
    removes history."""
    return await write(request, _delete, connection_id, user.id, render=_no_content)


def _delete(conn: Connection, connection_id: str, owner_id: UUID) -> None:
    chat.delete_connection(conn, connection_id, owner_id=owner_id)


def _no_content(_result: Any) -> Response:
    return Response(status_code=204)
