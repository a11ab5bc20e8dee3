"""The SQL of chat/ that differs per engine, behind one seam chosen once per engine.

Shaped like Alembic's ``ddl/impl.py``: :class:`~noclash.chat.sql.base.ChatSQL` states the
contract and holds the portable pieces, :mod:`~noclash.chat.sql.postgresql` and
:mod:`~noclash.chat.sql.sqlite` implement the steps, and :func:`sql_for` picks the
implementation from the engine's :mod:`noclash.db.dialects` object. The algorithms in
chat/ call it and never ask which engine they run on. The touch rule
(:mod:`~noclash.chat.sql.touch`) is the one piece of SQL both engines share in two forms.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy.engine import Connection, Engine

from noclash.chat.sql.base import ChatSQL
from noclash.chat.sql.postgresql import PostgreSQLChatSQL
from noclash.chat.sql.sqlite import SQLiteChatSQL
from noclash.db.dialects import Dialect, UnsupportedDialect, dialect_for
from noclash.db.dialects.postgresql import PostgreSQLDialect
from noclash.db.dialects.sqlite import SQLiteDialect

_IMPLEMENTATIONS: dict[type[Dialect], type[ChatSQL]] = {
    PostgreSQLDialect: PostgreSQLChatSQL,
    SQLiteDialect: SQLiteChatSQL,
}


@cache
def _for_dialect(dialect: Dialect) -> ChatSQL:
    for kind in type(dialect).__mro__:
        if kind in _IMPLEMENTATIONS:
            return _IMPLEMENTATIONS[kind](dialect)
    raise UnsupportedDialect(f"chat has no SQL for the {dialect.name} dialect")


def sql_for(bind: Engine | Connection) -> ChatSQL:
    """The chat SQL of ``bind``'s engine: one object per dialect, made on first use."""
    return _for_dialect(dialect_for(bind))


__all__ = ["ChatSQL", "sql_for"]
