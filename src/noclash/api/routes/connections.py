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

import httpx
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
from noclash.channels.senders import senders
from noclash.channels.sending import CredentialRejected
from noclash.chat import connections as chat
from noclash.chat.errors import InvalidInput
from noclash.chat.inbound import InboundResult, receive_message
from noclash.db.tables import (
    SENDING_CHANNELS,
    Channel,
    connections,
    conversations,
    max_length,
    messages,
)

router = APIRouter(prefix="/api/connections", tags=["connections"])
nested = APIRouter(prefix="/api/chatbots/{chatbot_id}/connections", tags=["connections"])


_SECRET = Field(default=None, min_length=1, max_length=max_length(connections.c.secret))
_ACCESS_TOKEN = Field(
    default=None,
    min_length=1,
    max_length=max_length(connections.c.access_token),
    # Tokens are printable ASCII: they travel in a header (Meta) or a URL path (Telegram).
    pattern=r"^[!-~]+$",
    description="Write-only. Meta: the Page access token; Telegram: the bot token. "
    "noclash asks the platform whose it is before storing it.",
)


def _secret_rule(schema: dict[str, Any]) -> None:
    """Publish the domain rule a schema can state: these channels need a secret."""
    publish_text_rules(schema)
    schema["if"] = {
        "properties": {"channel": {"enum": sorted(str(c) for c in chat.SECRET_REQUIRED)}}
    }
    (pattern, _words) = chat.SECRET_SHAPES[Channel.TELEGRAM]
    schema["then"] = {
        "required": ["secret"],
        "properties": {"secret": {"type": "string", "pattern": f"^{pattern.pattern}$"}},
    }


class ConnectionIn(StrictModel):
    """A connection; a telegram one needs its ``secret`` (the webhook's secret token)."""

    model_config = ConfigDict(json_schema_extra=_secret_rule)

    channel: Channel
    external_id: str = Field(min_length=1, max_length=max_length(connections.c.external_id))
    secret: str | None = _SECRET
    access_token: str | None = _ACCESS_TOKEN


class ConnectionPatch(StrictModel):
    """The credentials of a connection: a field given is set, a field left out is kept.
    ``access_token`` may be null (the connection stops sending); ``secret`` may only be
    replaced (a Telegram webhook has no other authentication)."""

    secret: str = Field(default=None, min_length=1, max_length=max_length(connections.c.secret))
    access_token: str | None = _ACCESS_TOKEN


class ConnectionOut(BaseModel):
    id: UUID
    chatbot_id: UUID
    channel: Channel
    external_id: str
    # Secrets are write-only: the API says whether one is set, never what it is.
    has_secret: bool
    has_access_token: bool
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
        "has_access_token": row.access_token is not None,
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
                "retry-failed": link(
                    "POST",
                    "/api/connections/{connection_id}/retry-failed",
                    "Send its failed replies again",
                    connection_id="$response.body#/id",
                ),
            }
        },
        **problems(
            ProblemType.UNIQUE_VIOLATION,
            ProblemType.PLATFORM_UNAVAILABLE,
            s409="The channel and external_id are taken: fields names both",
            s503="The platform could not be asked whose access_token this is (or the database)",
        ),
    },
)
async def create_connection(
    request: Request, chatbot_id: str, body: ConnectionIn, user: CurrentUser
) -> Response:
    """Connect a chatbot to a channel; (channel, external_id) taken is a 409 naming both.

    With an ``access_token``, noclash first asks the platform whose token it is (Meta
    ``GET /me``: the Page, or for Instagram its ``instagram_business_account``; Telegram
    ``getMe``: the bot) and stores the connection only when that is ``external_id``."""
    if body.access_token is not None:
        await prove_ownership(request, body.channel, body.external_id, body.access_token)
    elif request.app.state.settings.require_access_token and body.channel in SENDING_CHANNELS:
        raise InvalidInput(
            f"a {body.channel} connection needs an access_token on this server, to prove "
            f"that {body.channel} id {body.external_id} is yours",
            field="access_token",
        )
    return await write(request, _create, user.id, chatbot_id, body, render=CONNECTION_OUT)


async def prove_ownership(
    request: Request, channel: Channel, external_id: str, access_token: str
) -> None:
    """Raise InvalidInput (422 naming ``access_token``) unless the platform says the token
    belongs to ``external_id``; PlatformUnreachable (503) when it cannot be asked."""
    settings = request.app.state.settings
    sender = senders(settings).get(channel)
    if sender is None:
        raise InvalidInput(f"a {channel} connection takes no access_token", field="access_token")
    timeout = httpx.Timeout(settings.platform_timeout_seconds)
    async with httpx.AsyncClient(timeout=timeout) as client:
        try:
            owned = await sender.owned_id(client, access_token=access_token)
        except CredentialRejected as exc:
            raise InvalidInput(
                f"the platform refused the token: {exc}", field="access_token"
            ) from exc
    if owned != external_id:
        raise InvalidInput(
            f"the access_token belongs to {channel} id {owned}, not to {external_id}",
            field="access_token",
        )


@router.patch(
    "/{connection_id}",
    response_model=ConnectionOut,
    responses=problems(
        ProblemType.PLATFORM_UNAVAILABLE,
        ProblemType.CONFLICT,
        s409="The secret does not suit the connection's channel (Telegram's setWebhook "
        "takes 1 to 256 of A-Z a-z 0-9 _ -)",
    ),
)
async def update_connection(
    request: Request, connection_id: str, body: ConnectionPatch, user: CurrentUser
) -> Response:
    """Rotate or clear a connection's credentials (``access_token``, ``secret``). A new
    access token is proven to be ``external_id``'s first, as at creation."""
    changes = body.model_dump(include=body.model_fields_set)
    if changes.get("access_token") is not None:
        current = await read(request, _get_row, connection_id, user.id)
        channel = Channel(current.channel)
        await prove_ownership(request, channel, current.external_id, changes["access_token"])
    return await write(request, _update, connection_id, user.id, changes, render=CONNECTION)


def _get_row(conn: Connection, connection_id: str, owner_id: UUID) -> Any:
    return chat.get_connection(conn, connection_id, owner_id=owner_id)


def _update(conn: Connection, connection_id: str, owner_id: UUID, changes: dict) -> dict:
    row = chat.update_connection(conn, connection_id, owner_id=owner_id, changes=changes)
    return render(row)


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


class RetryFailedSendsIn(StrictModel):
    since: AwareDatetime | None = Field(
        None, description="Only deliveries that failed at or after this time (default: all)."
    )


class RequeuedOut(BaseModel):
    requeued: int = Field(description="Failed deliveries queued again.")


REQUEUED = Rendered(RequeuedOut, 200)


@router.post(
    "/{connection_id}/retry-failed",
    response_model=RequeuedOut,
    responses=problems(
        ProblemType.CONFLICT,
        s409="The connection sends nothing to a platform (channel), or has no access_token",
    ),
)
async def retry_failed_sends(
    request: Request, connection_id: str, user: CurrentUser, body: RetryFailedSendsIn | None = None
) -> Response:
    """Send every failed reply of this connection again, now, each with a fresh count of
    attempts (``since``: only those that failed from then on): after a platform outage
    that outlasted the retries, or once a revoked token is replaced. ``unknown``
    deliveries are left alone (the customer may have them; retry each one that should go
    again). Safe to repeat: a delivery is queued once however many calls race."""
    since = body.since if body else None
    return await write(request, _retry_failed, connection_id, user.id, since, render=REQUEUED)


def _retry_failed(
    conn: Connection, connection_id: str, owner_id: UUID, since: datetime | None
) -> dict[str, int]:
    return {
        "requeued": chat.retry_failed_sends(conn, connection_id, owner_id=owner_id, since=since)
    }


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
