"""``/api/widget/{public_token}/sessions``: the public web widget.

Public routes: the public token (a UUIDv4 under a unique index) selects the chatbot, and a
malformed or unknown token or session is a 404, the same answer as a wrong pairing. A
chatbot with ``require_auth`` also wants a valid bearer token. The session id is made by
the server and returned once; the client never sends one when starting a session.
"""

from __future__ import annotations

from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from noclash.api.deps import get_engine, get_settings, optional_user
from noclash.api.responses import Rendered
from noclash.api.schemas import StrictModel
from noclash.channels.widget import MAX_CLIENT_MESSAGE_ID_LENGTH
from noclash.chat import sessions as chat
from noclash.chat.chatbots import get_chatbot_by_public_token
from noclash.chat.errors import InvalidInput, Unauthenticated
from noclash.chat.users import User
from noclash.config import Settings

router = APIRouter(tags=["widget"])


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


SESSION_OUT = Rendered(SessionOut)


def _require(require_auth: bool, user: User | None) -> None:
    if require_auth and user is None:
        raise Unauthenticated("this chatbot requires Authorization: Bearer <token>")


@router.post("/api/widget/{public_token}/sessions", status_code=201, response_model=SessionOut)
async def start_session(
    request: Request, public_token: str, user: User | None = Depends(optional_user)
) -> Response:
    """Start a visitor session; the server makes the session id (UUIDv4, unique)."""
    # One worker-thread call for the transaction and the rendering (noclash.api.responses).
    engine: Engine = request.app.state.engine
    return await anyio.to_thread.run_sync(_start_session, engine, public_token, user)


def _start_session(engine: Engine, public_token: str, user: User | None) -> Response:
    with engine.begin() as conn:
        chatbot = get_chatbot_by_public_token(conn, public_token)
        _require(chatbot.require_auth, user)
        session = chat.start_session(conn, chatbot)
    return SESSION_OUT.response(
        {"conversation_id": session.conversation_id, "session_id": session.session_id}
    )


@router.post(
    "/api/widget/{public_token}/sessions/{session_id}/messages",
    status_code=201,
    response_model=WidgetMessageOut,
    responses={200: {"description": "Already stored (same client_message_id)"}},
)
def post_message(
    public_token: str,
    session_id: str,
    body: WidgetMessageIn,
    response: Response,
    user: User | None = Depends(optional_user),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict:
    """Store a visitor message: 201 stored, 200 when this client_message_id already was."""
    if len(body.text) > settings.max_text_length:
        raise InvalidInput(
            f"text is longer than {settings.max_text_length} characters", field="text"
        )
    with engine.begin() as conn:
        session = chat.get_session(conn, public_token, session_id)
        _require(session.require_auth, user)
        result = chat.post_message(
            conn, session, text=body.text, client_message_id=body.client_message_id
        )
    if result.duplicate:
        response.status_code = 200
    return {
        "conversation_id": result.conversation_id,
        "message_id": result.message_id,
        "duplicate": result.duplicate,
    }
