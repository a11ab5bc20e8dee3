"""``/api/chatbots`` and the public view ``/api/public/chatbots/{public_token}``.

``PATCH /api/chatbots/{id}`` changes the fields it is given (absent: unchanged; ``null``
clears an optional one); ``DELETE /api/chatbots/{id}`` removes the chatbot with everything
it holds, in one transaction (:func:`noclash.chat.chatbots.delete_chatbot`).

A chatbot's ``webhook_url`` is where its events are POSTed (docs/events.md). It is checked
before anything is written (:func:`noclash.channels.webhooks.check_url`: http or https, and
no address inside noclash's network), and a 422 names it. Its secret is made by the server
(``POST /api/chatbots/{id}/webhook-secret``) and shown in that answer only; every other
answer says ``has_webhook_secret``.
"""

from __future__ import annotations

import time
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
from noclash.channels import webhooks
from noclash.channels.sending import Outcome
from noclash.chat import chatbots as chat
from noclash.chat import events
from noclash.chat.errors import Conflict, InvalidInput, Unauthenticated
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
_WEBHOOK_URL = Field(
    default=None,
    min_length=1,
    max_length=max_length(chatbots.c.webhook_url),
    # Described, not enforced here: a URL it refuses would get pydantic's message (the
    # pattern itself); check_webhook_url refuses it with one that says what is wrong
    # ("must be an http:// or https:// URL", "has no host", a private address...).
    json_schema_extra={"pattern": r"^[hH][tT][tT][pP][sS]?://[^\s/?#]+([/?#][^\s]*)?$"},
    description="Where the chatbot's events are POSTed (http or https, a public address). "
    "null: none (PATCH: removing it fails the events still on their way).",
)
# The settings a chatbot is created with and a PATCH changes, declared once for both.
_SLACK_CHANNEL_ID = Field(default=None, max_length=max_length(chatbots.c.slack_channel_id))
_ASANA_PROJECT_ID = Field(default=None, max_length=max_length(chatbots.c.asana_project_id))
_ALLOWED_ORIGINS = Field(default=None, max_length=chat.MAX_ORIGINS, description=ORIGINS_HELP)
_WEBHOOK_EVENTS = Field(
    default=None,
    min_length=1,
    description="The event types the webhook is sent (others stay in the pull API and the "
    "streams); null or absent: every type.",
)


class ChatbotIn(StrictModel):
    name: str = Field(min_length=1, max_length=max_length(chatbots.c.name))
    slack_channel_id: str | None = _SLACK_CHANNEL_ID
    asana_project_id: str | None = _ASANA_PROJECT_ID
    require_auth: bool = False
    allowed_origins: list[Origin] | None = _ALLOWED_ORIGINS
    webhook_url: str | None = _WEBHOOK_URL
    webhook_events: list[events.EventType] | None = _WEBHOOK_EVENTS


class ChatbotPatch(StrictModel):
    """The settings to change; a field left out stays as it is. ``name`` and
    ``require_auth`` cannot be null (their default here is never validated, an explicit
    null is); the optional ids can (null clears them). A new setting is one more field here
    and in :data:`noclash.chat.chatbots.EDITABLE`."""

    name: str = Field(default=None, min_length=1, max_length=max_length(chatbots.c.name))
    slack_channel_id: str | None = _SLACK_CHANNEL_ID
    asana_project_id: str | None = _ASANA_PROJECT_ID
    require_auth: bool = Field(default=None)
    allowed_origins: list[Origin] | None = _ALLOWED_ORIGINS
    webhook_url: str | None = _WEBHOOK_URL
    webhook_events: list[events.EventType] | None = _WEBHOOK_EVENTS


class ChatbotOut(BaseModel):
    id: UUID
    name: str
    public_token: UUID
    require_auth: bool
    slack_channel_id: str | None
    asana_project_id: str | None
    allowed_origins: list[str] | None
    created_at: datetime
    webhook_url: str | None
    webhook_events: list[events.EventType] | None = Field(
        description="The event types the webhook is sent; null: every type."
    )
    # The secret itself is shown once, by POST /api/chatbots/{id}/webhook-secret.
    has_webhook_secret: bool


class WebhookSecretOut(BaseModel):
    webhook_secret: str = Field(
        description="Shown this once. Verify each event's Noclash-Signature with it."
    )


class PingOut(BaseModel):
    """How the webhook answered a ``ping``: sent now, once, and not stored."""

    delivered: bool = Field(description="The webhook answered 2xx.")
    event_id: UUID = Field(description="The ping's Noclash-Event-Id.")
    signed: bool = Field(description="Sent with a Noclash-Signature (the chatbot has a secret).")
    status_code: int | None = Field(description="The webhook's HTTP status (null: no answer).")
    error: str | None = Field(description="Why it was not delivered, as last_error says it.")
    duration_ms: float = Field(description="From the request's start to the answer's end.")


class PublicChatbotOut(BaseModel):
    name: str
    public_token: UUID
    require_auth: bool


PUBLIC_TOKEN = "$response.body#/public_token"


def shown(row: Any) -> dict[str, Any]:
    """A chatbot as its owner reads it: every setting, and whether it has a webhook secret
    (never the secret)."""
    return {
        "id": row.id,
        "name": row.name,
        "public_token": row.public_token,
        "require_auth": row.require_auth,
        "slack_channel_id": row.slack_channel_id,
        "asana_project_id": row.asana_project_id,
        "allowed_origins": row.allowed_origins,
        "created_at": row.created_at,
        "webhook_url": row.webhook_url,
        "webhook_events": events.webhook_types(row.webhook_events),
        "has_webhook_secret": row.webhook_secret is not None,
    }


CHATBOT_OUT = Rendered(ChatbotOut)
CHATBOT = Rendered(ChatbotOut, 200)
CHATBOT_PAGE = Rendered(Page[ChatbotOut], 200)
PUBLIC_CHATBOT = Rendered(PublicChatbotOut, 200)
WEBHOOK_SECRET = Rendered(WebhookSecretOut, 200)
PING = Rendered(PingOut, 200)


async def check_webhook_url(request: Request, url: str | None) -> None:
    """A 422 naming ``webhook_url`` unless noclash may send to it; nothing is written
    before. The host is resolved in a worker thread, off the event loop."""
    if url is None:
        return
    settings = request.app.state.settings
    try:
        await webhooks.check_url(
            url,
            allow_private=settings.allow_private_webhooks,
            timeout=settings.platform_timeout_seconds,
        )
    except webhooks.UnsafeWebhookUrl as exc:
        raise InvalidInput(str(exc), field="webhook_url") from None


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
                "ping": link("POST", "/api/chatbots/{chatbot_id}/webhook-ping",
                             "Check its webhook", chatbot_id="$response.body#/id"),
                "retry-failed": link("POST", "/api/chatbots/{chatbot_id}/events/retry-failed",
                                     "Send its failed events again",
                                     chatbot_id="$response.body#/id"),
            }
        },
        # The public token's unique index: 122 random bits, so in practice never.
        **problems(ProblemType.UNIQUE_VIOLATION),
    },
)  # fmt: skip
async def create_chatbot(request: Request, body: ChatbotIn, user: CurrentUser) -> Response:
    """Create a chatbot; its public token is a fresh UUIDv4 under a unique index."""
    await check_webhook_url(request, body.webhook_url)
    return await write(request, _create, user.id, body, render=CHATBOT_OUT)


def _create(conn: Connection, owner_id: UUID, body: ChatbotIn) -> dict[str, Any]:
    return shown(chat.create_chatbot(conn, owner_id=owner_id, **body.model_dump()))


@router.get("", response_model=Page[ChatbotOut])
async def list_chatbots(request: Request, params: PageDep, user: CurrentUser) -> Response:
    return await read(request, _list, user.id, params, render=CHATBOT_PAGE)


def _list(conn: Connection, owner_id: UUID, params: PageParams) -> dict:
    rows = chat.list_chatbots(conn, owner_id=owner_id, after=params.after, limit=params.fetch)
    return page(rows, params, shown)


@router.get("/{chatbot_id}", response_model=ChatbotOut)
async def get_chatbot(request: Request, chatbot_id: str, user: CurrentUser) -> Response:
    return await read(request, _get, chatbot_id, user.id, render=CHATBOT)


def _get(conn: Connection, chatbot_id: str, owner_id: UUID) -> dict[str, Any]:
    return shown(chat.get_chatbot(conn, chatbot_id, owner_id=owner_id))


@router.patch("/{chatbot_id}", response_model=ChatbotOut)
async def update_chatbot(
    request: Request, chatbot_id: str, body: ChatbotPatch, user: CurrentUser
) -> Response:
    """Change a chatbot's settings; only the fields sent change (the public token never).
    ``webhook_url`` null removes the webhook and fails the events still on their way to it
    (each with a ``delivery.failed`` event, read through ``GET /api/events``)."""
    changes = body.model_dump(exclude_unset=True)
    await check_webhook_url(request, changes.get("webhook_url"))
    return await write(request, _update, chatbot_id, user.id, changes, render=CHATBOT)


def _update(conn: Connection, chatbot_id: str, owner_id: UUID, changes: dict) -> dict[str, Any]:
    return shown(chat.update_chatbot(conn, chatbot_id, owner_id=owner_id, changes=changes))


@router.post(
    "/{chatbot_id}/webhook-secret",
    response_model=WebhookSecretOut,
    responses=problems(401, 404),
)
async def rotate_webhook_secret(request: Request, chatbot_id: str, user: CurrentUser) -> Response:
    """Give the chatbot a new webhook secret, returned this once (``has_webhook_secret``
    says one is set; nothing shows it again). Every attempt claimed after this, retries
    included, is signed with the new one (an attempt already claimed, sent within
    seconds, may still carry the old one). Without a secret, events are sent unsigned, so
    make one before setting ``webhook_url``. A lost answer is retried by rotating again."""
    secret = webhooks.new_secret()
    await write(request, _set_secret, chatbot_id, user.id, secret)
    return WEBHOOK_SECRET({"webhook_secret": secret})


def _set_secret(conn: Connection, chatbot_id: str, owner_id: UUID, secret: str) -> None:
    chat.set_webhook_secret(conn, chatbot_id, owner_id=owner_id, secret=secret)


@router.post(
    "/{chatbot_id}/webhook-ping",
    response_model=PingOut,
    responses=problems(401, 404, ProblemType.CONFLICT, s409="The chatbot has no webhook_url"),
)
async def ping_webhook(request: Request, chatbot_id: str, user: CurrentUser) -> Response:
    """Send a ``ping`` to the chatbot's webhook now, as every event is sent (signed with
    its secret, over a connection checked to lead outside noclash's network, within
    ``NOCLASH_PLATFORM_TIMEOUT_SECONDS``), and answer how the webhook answered: a bot's
    set-up check. The ping is not an event: it is not stored, not retried and not in
    ``GET /api/events``; a refusal is a 200 with ``delivered`` false and the reason."""
    bot = await read(request, _get_row, chatbot_id, user.id)
    if bot.webhook_url is None:
        raise Conflict("the chatbot has no webhook_url to ping", fields=("webhook_url",))
    settings = request.app.state.settings
    ping = events.ping_envelope(bot.id)
    started = time.perf_counter()
    # Through the sender events take: a URL written around the API's check (another
    # tool, an older noclash) that it cannot use is said in the answer, like any refusal.
    post = webhooks.EventPost(bot.webhook_url, bot.webhook_secret, ping)
    sender = webhooks.WebhookSender(settings.platform_timeout_seconds)
    async with webhooks.client(
        timeout=settings.platform_timeout_seconds,
        max_connections=1,
        allow_private=settings.allow_private_webhooks,
    ) as client:
        result = await sender.send(client, post)
    return PING(
        {
            "delivered": result.outcome == Outcome.SENT,
            "event_id": ping["id"],
            "signed": bool(bot.webhook_secret),
            "status_code": result.status_code,
            "error": result.error,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
    )


def _get_row(conn: Connection, chatbot_id: str, owner_id: UUID) -> Any:
    return chat.get_chatbot(conn, chatbot_id, owner_id=owner_id)


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
