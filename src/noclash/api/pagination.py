"""Cursor pagination: ``{"items": [...], "next_cursor": ...}`` for every list.

Ids are UUIDv7, so ``ORDER BY id`` is creation order and the last id of a page is a
stable cursor: inserts between two requests neither skip nor repeat rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel

from noclash.chat.errors import InvalidInput
from noclash.unique.ids import parse_uuid

MAX_LIMIT = 200

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class PageParams:
    limit: int
    after: UUID | None

    @property
    def fetch(self) -> int:
        """Rows to read: one more than shown, the extra row says there is a next page."""
        return self.limit + 1


# An id parameter described as what it is (a UUID; empty means none), so that a client or
# a fuzzer knows a valid one; anything else is a 422 naming it (optional_id).
ID_OR_EMPTY: dict[str, Any] = {
    "anyOf": [{"type": "string", "format": "uuid"}, {"type": "string", "maxLength": 0}]
}


def optional_id(
    value: str | None, field: str, what: str = "an id this API returned"
) -> UUID | None:
    """A UUID query parameter: None when absent or empty, a 422 naming ``field`` when it
    is not a UUID."""
    if not value:
        return None
    parsed = parse_uuid(value)
    if parsed is None:
        raise InvalidInput(f"{field} is not {what}", field=field)
    return parsed


# ``cursor`` on the lists that start after an id of the caller's choosing (``after``): the
# name every list takes for next_cursor, so one paginator serves them all.
CURSOR_ALIAS = Query(
    None,
    description="next_cursor of the previous page (given with after, it wins: the "
    "list goes on from it).",
    json_schema_extra=ID_OR_EMPTY,
)


def after_or_cursor(after: str | None, cursor: str | None, what: str) -> UUID | None:
    """The id a list starts after: ``cursor`` when given (the name of every other list's
    next_cursor; ignored here, a generic paginator fetched the first page forever), else
    ``after``. A paginator that keeps the first request's ``after`` and adds the
    ``cursor`` it was given is continuing from that cursor, so the cursor wins."""
    start = optional_id(after, "after", what)
    following = optional_id(cursor, "cursor", "one this API returned")
    return following if following is not None else start


async def page_params(
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description="Items per page."),
    cursor: str | None = Query(
        None, description="next_cursor of the previous page.", json_schema_extra=ID_OR_EMPTY
    ),
) -> PageParams:
    after = optional_id(cursor, "cursor", "one this API returned")
    return PageParams(limit=limit, after=after)


PageDep = Annotated[PageParams, Depends(page_params)]


def page(
    rows: Sequence[Any], params: PageParams, render: Callable[[Any], Any] | None = None
) -> dict:
    """The page of rows fetched with :attr:`PageParams.fetch`; ``render`` maps each row to
    what the item model reads (the row itself when its attributes are the fields)."""
    more = len(rows) > params.limit
    shown = rows[: params.limit]
    return {
        "items": list(shown) if render is None else [render(r) for r in shown],
        "next_cursor": str(shown[-1].id) if more and shown else None,
    }
