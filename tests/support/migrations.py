"""Rows for migration tests: written with explicit columns that every revision has, so a
test can populate a database at an old revision."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy.engine import Connection

from noclash.db.tables import metadata
from noclash.unique import uuid4, uuid7


def insert_owner(conn: Connection, now: datetime) -> tuple[UUID, UUID]:
    """A user and a chatbot of theirs: ``(user id, chatbot id)``."""
    t = metadata.tables
    user, bot = uuid7(), uuid7()
    conn.execute(t["users"].insert().values(id=user, email="a@x.io", token_hash="h" * 64,
                                            is_admin=False, created_at=now))  # fmt: skip
    conn.execute(t["chatbots"].insert().values(id=bot, owner_id=user, name="b",
                                               public_token=uuid4(), require_auth=False,
                                               created_at=now))  # fmt: skip
    return user, bot
