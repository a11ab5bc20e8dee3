"""``/api/widget/{public_token}/sessions``: the public web widget.

Public routes: the public token (a UUIDv4 under a unique index) selects the chatbot, and a
malformed or unknown token or session is a 404, the same answer as a wrong pairing. A
chatbot with ``require_auth`` also wants a valid bearer token. The session id is made by
the server and returned once; the client never sends one when starting a session.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.responses import Response

from noclash.api.deps import OptionalUser, SettingsDep
from noclash.api.pagination import (
    CURSOR_ALIAS,
    ID_OR_EMPTY,
    MAX_LIMIT,
    Page,
    PageParams,
    after_or_cursor,
    page,
)
from noclash.api.responses import Rendered, link
from noclash.api.schemas import StrictModel, check_text
from noclash.api.work import read, write
from noclash.chat import sessions as chat
from noclash.chat.chatbots import get_chatbot_by_public_token
from noclash.chat.errors import Unauthenticated
from noclash.chat.inbound import InboundResult
from noclash.chat.sessions import MAX_CLIENT_MESSAGE_ID_LENGTH
from noclash.chat.users import User
from noclash.db.tables import Direction

router = APIRouter(prefix="/api/widget/{public_token}/sessions", tags=["widget"])


class SessionOut(BaseModel):
    conversation_id: UUID
    session_id: UUID


class WidgetMessageIn(StrictModel):
    text: str = Field(min_length=1, description="The visitor's message.")
    client_message_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CLIENT_MESSAGE_ID_LENGTH,
        description="The client's id for this message: a resend with it is stored once.",
    )


class WidgetMessageOut(BaseModel):
    conversation_id: UUID
    message_id: UUID
    duplicate: bool


class WidgetMessageView(BaseModel):
    """A message as the visitor sees it: ``in`` is the visitor's, ``out`` the reply."""

    id: UUID
    conversation_id: UUID
    direction: Direction
    text: str
    created_at: datetime


SESSION_OUT = Rendered(SessionOut)
WIDGET_MESSAGE_OUT = Rendered(WidgetMessageOut)
WIDGET_MESSAGE_PAGE = Rendered(Page[WidgetMessageView], 200)


def _require(require_auth: bool, user: User | None) -> None:
    if require_auth and user is None:
        raise Unauthenticated("this chatbot requires Authorization: Bearer <token>")


@router.post(
    "",
    status_code=201,
    response_model=SessionOut,
    responses={
        201: {
            "links": {
                "message": link(
                    "POST",
                    "/api/widget/{public_token}/sessions/{session_id}/messages",
                    "The visitor writes",
                    public_token="$request.path.public_token",
                    session_id="$response.body#/session_id",
                ),
                "read": link(
                    "GET",
                    "/api/widget/{public_token}/sessions/{session_id}/messages",
                    "The visitor reads the conversation",
                    public_token="$request.path.public_token",
                    session_id="$response.body#/session_id",
                ),
            }
        }
    },
)
async def start_session(request: Request, public_token: str, user: OptionalUser) -> Response:
    """Start a visitor session; the server makes the session id (UUIDv4, unique)."""
    return await write(request, _start, public_token, user, render=SESSION_OUT)


def _start(conn: Connection, public_token: str, user: User | None) -> chat.WidgetSession:
    chatbot = get_chatbot_by_public_token(conn, public_token)
    _require(chatbot.require_auth, user)
    return chat.start_session(conn, chatbot)


@router.post(
    "/{session_id}/messages",
    status_code=201,
    response_model=WidgetMessageOut,
    responses={200: {"description": "Already stored (same client_message_id)"}},
)
async def post_message(
    request: Request,
    public_token: str,
    session_id: str,
    body: WidgetMessageIn,
    user: OptionalUser,
    settings: SettingsDep,
) -> Response:
    """Store a visitor message: 201 stored, 200 when this client_message_id already was."""
    check_text(body.text, settings)
    work = (public_token, session_id, user, body)
    return await write(request, _post, *work, render=_message_out)


def _post(
    conn: Connection, public_token: str, session_id: str, user: User | None, body: WidgetMessageIn
) -> InboundResult:
    session = chat.get_session(conn, public_token, session_id)
    _require(session.require_auth, user)
    return chat.post_message(
        conn, session, text=body.text, client_message_id=body.client_message_id
    )


@router.get("/{session_id}/messages", response_model=Page[WidgetMessageView])
async def list_messages(
    request: Request,
    public_token: str,
    session_id: str,
    user: OptionalUser,
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description="Items per page."),
    after: str | None = Query(
        None,
        description="A message id: only later messages (the last one the visitor has).",
        json_schema_extra=ID_OR_EMPTY,
    ),
    cursor: str | None = CURSOR_ALIAS,
) -> Response:
    """The visitor's conversation, both directions, oldest first: every message of this
    session after ``after`` (a message id), so a visitor polls with the last id it has.
    ``next_cursor`` is the ``after`` of the next page."""
    params = PageParams(limit=limit, after=after_or_cursor(after, cursor, "a message id"))
    return await read(
        request, _list, public_token, session_id, user, params, render=WIDGET_MESSAGE_PAGE
    )


def _list(
    conn: Connection, public_token: str, session_id: str, user: User | None, params: PageParams
) -> dict:
    session = chat.get_session(conn, public_token, session_id)
    _require(session.require_auth, user)
    rows = chat.list_session_messages(conn, session, after=params.after, limit=params.fetch)
    return page(rows, params)


def _message_out(result: InboundResult) -> Response:
    return WIDGET_MESSAGE_OUT.response(result, 200 if result.duplicate else 201)
