"""Cursor pagination: ``{"items": [...], "next_cursor": ...}`` for every list.

Ids are UUIDv7, so ``ORDER BY id`` is creation order and the last id of a page is a
stable cursor: inserts between two requests neither skip nor repeat rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastapi import Query

from noclash.chat.errors import InvalidInput
from noclash.unique.ids import parse_uuid

MAX_LIMIT = 200


@dataclass(frozen=True)
class PageParams:
    limit: int
    after: UUID | None


async def page_params(
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description="Items per page."),
    cursor: str | None = Query(None, description="next_cursor of the previous page."),
) -> PageParams:
    after = None
    if cursor:
        after = parse_uuid(cursor)
        if after is None:
            raise InvalidInput("cursor is not one this API returned", field="cursor")
    return PageParams(limit=limit, after=after)


def page(rows: Sequence[Any], params: PageParams, render: Callable[[Any], Any]) -> dict:
    """Render a page fetched with ``limit + 1`` rows (the extra row says there is more)."""
    more = len(rows) > params.limit
    shown = rows[: params.limit]
    return {
        "items": [render(r) for r in shown],
        "next_cursor": str(shown[-1].id) if more and shown else None,
    }
