"""One keyed request for each creating route, with the rows it needs made beforehand.

The rows are made directly in the database with the domain functions, not through the
server under test (which may be about to be killed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from noclash.chat.conversations import insert_conversation
from noclash.chat.sessions import start_session
from noclash.chat.users import create_user
from noclash.db import tables
from tests.support.factories import make_chatbot, make_connection

# Each creating route (by the name the tests use) and its path template.
CREATING_ROUTES = {
    "chatbots": "/api/chatbots",
    "connections": "/api/chatbots/{chatbot_id}/connections",
    "conversations": "/api/chatbots/{chatbot_id}/conversations",
    "inbound": "/api/connections/{connection_id}/inbound",
    "reply": "/api/conversations/{conversation_id}/messages",
    "widget-session": "/api/widget/{public_token}/sessions",
    "widget-message": "/api/widget/{public_token}/sessions/{session_id}/messages",
}


@dataclass
class Create:
    """One keyed create: where to send it, and the table it writes."""

    path: str
    body: dict[str, Any]
    table: sa.Table
    headers: dict[str, str]


def prepare_create(engine: Engine, route: str) -> Create:
    """The rows ``route`` needs (a new user, its chatbot...) and its keyed request."""
    user, token = create_user(engine, f"crash-{uuid.uuid4().hex[:12]}@example.com")
    auth = {"Authorization": f"Bearer {token}"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    if route not in CREATING_ROUTES:
        raise ValueError(route)
    if route == "chatbots":
        return Create("/api/chatbots", {"name": "Crash"}, tables.chatbots, auth | key)
    bot = make_chatbot(engine, owner_id=user.id)
    if route == "connections":
        body = {"channel": "messenger", "external_id": f"page-{uuid.uuid4().hex}"}
        path = f"/api/chatbots/{bot.id}/connections"
        return Create(path, body, tables.connections, auth | key)
    if route == "conversations":
        path = f"/api/chatbots/{bot.id}/conversations"
        return Create(path, {"title": "Billing"}, tables.conversations, auth | key)
    if route == "reply":
        with engine.begin() as conn:
            conversation, _ = insert_conversation(conn, chatbot_id=bot.id, title="Help")
        path = f"/api/conversations/{conversation.id}/messages"
        return Create(path, {"text": "On it"}, tables.messages, auth | key)
    if route == "inbound":
        connection = make_connection(engine, bot.id)
        body = {"psid": "customer-1", "message_id": "m-1", "text": "hello"}
        return Create(
            f"/api/connections/{connection.id}/inbound", body, tables.messages, auth | key
        )
    sessions = f"/api/widget/{bot.public_token}/sessions"
    if route == "widget-session":
        return Create(sessions, {}, tables.sessions, key)
    with engine.begin() as conn:
        session = start_session(conn, bot)
    path = f"{sessions}/{session.session_id}/messages"
    return Create(path, {"text": "hi", "client_message_id": "c-1"}, tables.messages, key)
