"""``/api/conversations/{id}/messages``: a conversation's messages and an agent's replies;
``/api/messages/{id}/retry``: send a failed or unknown reply again.

Inbound customer messages arrive through the channels (webhooks, the widget, the generic
inbound); this resource lists them and stores the agent's outbound replies. A reply in a
Messenger, Instagram or Telegram conversation is stored with its delivery and sent by a
dispatcher (:mod:`noclash.dispatch`); every message carries its ``delivery`` (null where
there is no platform to send to: the widget, a custom integration, no connection).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.responses import Response

from noclash.api.deps import CurrentUser, SettingsDep
from noclash.api.pagination import Page, PageDep, PageParams, page
from noclash.api.problems import ProblemType
from noclash.api.responses import Rendered, link, problems
from noclash.api.schemas import StrictModel, check_text
from noclash.api.work import read, write
from noclash.channels.sending import text_refusal
from noclash.chat import messages, outbox
from noclash.db.tables import DeliveryStatus, Direction

router = APIRouter(prefix="/api/conversations/{conversation_id}/messages", tags=["messages"])
items = APIRouter(prefix="/api/messages", tags=["messages"])


class DeliveryOut(BaseModel):
    """Where an outgoing message stands with its platform (docs/outbound.md)."""

    status: DeliveryStatus
    attempts: int
    last_error: str | None
    platform_message_id: str | None
    sent_at: datetime | None


class MessageOut(BaseModel):
    id: UUID
    conversation_id: UUID
    connection_id: UUID | None
    platform_message_id: str | None
    direction: Direction
    text: str
    sent_at: datetime | None
    created_at: datetime
    delivery: DeliveryOut | None


class ReplyIn(StrictModel):
    text: str = Field(min_length=1)


_MESSAGE_FIELDS = tuple(f for f in MessageOut.model_fields if f != "delivery")


def message_view(row: Any) -> dict:
    """A row of :func:`noclash.chat.messages.with_delivery` as :class:`MessageOut` reads it."""
    m = row._mapping
    delivery = (
        None
        if m["delivery_status"] is None
        else {f: m[f"delivery_{f}"] for f in messages.DELIVERY_FIELDS}
    )
    return {**{f: m[f] for f in _MESSAGE_FIELDS}, "delivery": delivery}


MESSAGE_OUT = Rendered(MessageOut)
MESSAGE = Rendered(MessageOut, 200)
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
    return page(rows, params, message_view)


@router.post(
    "",
    status_code=201,
    response_model=MessageOut,
    responses={
        201: {
            "links": {
                "retry": link(
                    "POST",
                    "/api/messages/{message_id}/retry",
                    "Send it again once its delivery failed",
                    message_id="$response.body#/id",
                )
            }
        },
        **problems(ProblemType.CONFLICT, s409="The conversation is closed"),
    },
)
async def reply(
    request: Request,
    conversation_id: str,
    body: ReplyIn,
    user: CurrentUser,
    settings: SettingsDep,
) -> Response:
    """An agent's reply. In a Messenger, Instagram or Telegram conversation it is stored with
    its delivery (``delivery.status`` ``queued``) and sent by the dispatcher, once: a retry
    of this request with the same ``Idempotency-Key`` is the same message and delivery."""
    check_text(body.text, settings)
    return await write(request, _reply, conversation_id, user.id, body.text, render=_message_out)


def _reply(conn: Connection, conversation_id: str, owner_id: UUID, text: str) -> Any:
    return messages.send_reply(
        conn, conversation_id, owner_id=owner_id, text=text, refuse_text=text_refusal
    )


def _message_out(row: Any) -> Response:
    return MESSAGE_OUT(message_view(row))


@items.post(
    "/{message_id}/retry",
    response_model=MessageOut,
    responses=problems(
        ProblemType.CONFLICT,
        s409="The delivery is queued, sending or sent (only failed or unknown is retried), "
        "or could only fail again: its connection was deleted (fields: connection_id) or "
        "has no access_token (fields: access_token)",
    ),
)  # fmt: skip
async def retry(request: Request, message_id: str, user: CurrentUser) -> Response:
    """Send a ``failed`` or ``unknown`` reply again: its delivery is queued, due now, with a
    fresh count of attempts, and the dispatcher really sends it (nothing is marked sent
    that the platform did not accept). A reply that could only fail again (its connection
    deleted, or without an access token) is a 409 naming why, and is left as it was."""
    return await write(request, _retry, message_id, user.id, render=_retried)


def _retry(conn: Connection, message_id: str, owner_id: UUID) -> Any:
    delivery = outbox.retry(conn, message_id, owner_id=owner_id)
    return messages.get_message(conn, delivery.message_id)


def _retried(row: Any) -> Response:
    return MESSAGE(message_view(row))
