"""Rows the tests need, created through the domain functions (no raw fixtures)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from noclash.chat.chatbots import create_chatbot
from noclash.chat.users import create_user
from noclash.db.tables import connections
from noclash.db.types import utcnow
from noclash.unique import uuid7

_counter = iter(range(1, 10**9))


def make_user(engine: Engine) -> Any:
    user, _token = create_user(engine, f"u{next(_counter)}-{uuid7().hex[:8]}@example.com")
    return user


def make_chatbot(engine: Engine, owner_id: Any = None, **kwargs: Any) -> sa.Row[Any]:
    owner_id = owner_id or make_user(engine).id
    with engine.begin() as conn:
        return create_chatbot(conn, owner_id=owner_id, name=kwargs.pop("name", "bot"), **kwargs)


def make_connection(
    engine: Engine, chatbot_id: Any, channel: str = "messenger", external_id: str | None = None
) -> sa.Row[Any]:
    values = {
        "id": uuid7(),
        "chatbot_id": chatbot_id,
        "channel": channel,
        "external_id": external_id or f"ext-{uuid7().hex}",
        "created_at": utcnow(),
    }
    with engine.begin() as conn:
        return conn.execute(sa.insert(connections).values(values).returning(*connections.c)).one()
