"""Conversations: create under a chatbot, list, read, rename, look up by slug, lifecycle.

- ``POST /api/chatbots/{id}/conversations`` ``{title?, psid?}``: 201 with a slug unique in
  the chatbot (plain when free, else a random suffix); 409 naming the customer's active
  conversation when the psid already has one;
- ``PATCH /api/conversations/{id}`` ``{title}``: new title, slug recomputed (kept when the
  base is the same);
- ``GET /api/chatbots/{id}/conversations/by-slug/{slug}``: 200 for the current slug, 308 to
  the current slug for a former one, 404 otherwise;
- ``POST /api/conversations/{id}/close|snooze|reopen``: the lifecycle.

Every answer about a conversation is one shape, :class:`ConversationOut`. A slug collision
never reaches the client as an error: the slug rules absorb it. Ownership is resolved
through ``chatbots.owner_id``: another user's chatbot or conversation is a 404, exactly
like one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.responses import Response

from noclash.api.deps import CurrentUser
from noclash.api.pagination import Page, PageDep, PageParams, page
from noclash.api.problems import ProblemType
from noclash.api.responses import Rendered, link, problems
from noclash.api.schemas import StrictModel
from noclash.api.work import read, write
from noclash.chat import conversations as convs
from noclash.chat import lifecycle, slugs
from noclash.chat.chatbots import get_chatbot
from noclash.db.tables import Status, conversations, max_length

router = APIRouter(prefix="/api/conversations", tags=["conversations"])
nested = APIRouter(prefix="/api/chatbots/{chatbot_id}/conversations", tags=["conversations"])

TITLE_LENGTH = max_length(conversations.c.title)
PSID_LENGTH = max_length(conversations.c.psid)


class ConversationCreate(StrictModel):
    title: str | None = Field(default=None, max_length=TITLE_LENGTH)
    psid: str | None = Field(default=None, min_length=1, max_length=PSID_LENGTH)


class ConversationRename(StrictModel):
    title: str = Field(max_length=TITLE_LENGTH)


class SnoozeIn(StrictModel):
    until: AwareDatetime | None = None


class ConversationOut(BaseModel):
    id: UUID
    chatbot_id: UUID
    connection_id: UUID | None
    psid: str | None
    status: Status
    title: str | None
    slug: str
    last_message_at: datetime | None
    snoozed_until: datetime | None
    created_at: datetime
    closed_at: datetime | None


CONVERSATION_OUT = Rendered(ConversationOut)
CONVERSATION = Rendered(ConversationOut, 200)
CONVERSATION_PAGE = Rendered(Page[ConversationOut], 200)


def by_slug_path(chatbot_id: UUID, slug: str) -> str:
    return f"/api/chatbots/{chatbot_id}/conversations/by-slug/{quote(slug, safe='')}"


# -- under a chatbot ----------------------------------------------------------------------
@nested.post(
    "",
    status_code=201,
    response_model=ConversationOut,
    responses={
        201: {
            "links": {
                "by-slug": link(
                    "GET",
                    "/api/chatbots/{chatbot_id}/conversations/by-slug/{slug}",
                    "The conversation by its slug",
                    chatbot_id="$response.body#/chatbot_id",
                    slug="$response.body#/slug",
                )
            }
        },
        **problems(
            ProblemType.CONFLICT,
            ProblemType.UNIQUE_VIOLATION,
            s409="The customer (psid) already has an active conversation: conversation_id names it",
        ),
    },
)
async def create_conversation(
    request: Request, chatbot_id: str, body: ConversationCreate, user: CurrentUser
) -> Response:
    """Create a conversation; its slug comes from the title and is unique in the chatbot.

    With a ``psid`` it is that customer's one active conversation in the chatbot: while
    another OPEN or SNOOZED conversation without a connection has the same psid, the
    answer is 409 ``conflict`` naming it (``conversation_id``), and nothing is created."""
    return await write(request, _create, user.id, chatbot_id, body, render=CONVERSATION_OUT)


def _create(conn: Connection, owner_id: UUID, chatbot_id: str, body: ConversationCreate) -> Any:
    return convs.create_conversation(
        conn, chatbot_id, owner_id=owner_id, psid=body.psid, title=body.title
    )


class CountsOut(BaseModel):
    """Conversations per status."""

    OPEN: int
    SNOOZED: int
    CLOSED: int


COUNTS = Rendered(CountsOut, 200)


@nested.get("/counts", response_model=CountsOut)
async def count_conversations(request: Request, chatbot_id: str, user: CurrentUser) -> Response:
    """How many conversations of the chatbot are OPEN, SNOOZED and CLOSED."""
    return await read(request, _counts, chatbot_id, user.id, render=COUNTS)


def _counts(conn: Connection, chatbot_id: str, owner_id: UUID) -> dict[str, int]:
    return convs.count_by_status(conn, chatbot_id, owner_id=owner_id)


@nested.get(
    "/by-slug/{slug}",
    response_model=ConversationOut,
    responses={
        308: {
            "description": "A former slug: Location is the current one",
            "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
        }
    },
)
async def get_by_slug(request: Request, chatbot_id: str, slug: str, user: CurrentUser) -> Response:
    """The conversation with this slug; a former slug answers 308 to the current one."""
    render = partial(_by_slug_out, slug)
    return await read(request, _by_slug, chatbot_id, slug, user.id, render=render)


def _by_slug(conn: Connection, chatbot_id: str, slug: str, owner_id: UUID) -> Any:
    return slugs.resolve_slug(conn, chatbot_id, slug, owner_id=owner_id)


def _by_slug_out(asked: str, row: Any) -> Response:
    if row.slug != asked:
        return RedirectResponse(by_slug_path(row.chatbot_id, row.slug), status_code=308)
    return CONVERSATION(row)


# -- the collection and its items -------------------------------------------------------
@router.get(
    "",
    response_model=Page[ConversationOut],
    responses=problems(ProblemType.NOT_FOUND, s404="chatbot_id names no chatbot of yours"),
)
async def list_conversations(
    request: Request,
    params: PageDep,
    user: CurrentUser,
    chatbot_id: str | None = Query(None),
    status: Status | None = Query(None),
    psid: str | None = Query(None, max_length=PSID_LENGTH),
) -> Response:
    """The caller's conversations, filtered, oldest first, by cursor."""
    filters = (chatbot_id, status, psid)
    return await read(request, _list, user.id, filters, params, render=CONVERSATION_PAGE)


def _list(
    conn: Connection,
    owner_id: UUID,
    filters: tuple[str | None, Status | None, str | None],
    params: PageParams,
) -> dict:
    chatbot_id, status, psid = filters
    bot_id = get_chatbot(conn, chatbot_id, owner_id=owner_id).id if chatbot_id else None
    rows = convs.list_conversations(
        conn, owner_id=owner_id, chatbot_id=bot_id, status=status, psid=psid,
        after=params.after, limit=params.fetch,
    )  # fmt: skip
    return page(rows, params)


@router.get("/{conversation_id}", response_model=ConversationOut)
async def get_conversation(request: Request, conversation_id: str, user: CurrentUser) -> Response:
    return await read(request, _get, conversation_id, user.id, render=CONVERSATION)


def _get(conn: Connection, conversation_id: str, owner_id: UUID) -> Any:
    return convs.get_conversation(conn, conversation_id, owner_id=owner_id)


@router.patch(
    "/{conversation_id}",
    response_model=ConversationOut,
    # Only when every slug candidate is taken (growing random suffixes: in practice never).
    responses=problems(ProblemType.UNIQUE_VIOLATION),
)
async def rename_conversation(
    request: Request, conversation_id: str, body: ConversationRename, user: CurrentUser
) -> Response:
    """Rename; the slug follows the title, the old slug keeps redirecting."""
    return await write(request, _rename, conversation_id, user.id, body.title, render=CONVERSATION)


def _rename(conn: Connection, conversation_id: str, owner_id: UUID, title: str) -> Any:
    return slugs.rename_conversation(conn, conversation_id, owner_id=owner_id, title=title)


@router.post("/{conversation_id}/close", response_model=ConversationOut)
async def close(request: Request, conversation_id: str, user: CurrentUser) -> Response:
    """Close; closing a closed conversation is a no-op 200. The next message opens a new one."""
    return await write(request, _close, conversation_id, user.id, render=CONVERSATION)


def _close(conn: Connection, conversation_id: str, owner_id: UUID) -> Any:
    return lifecycle.close(conn, conversation_id, owner_id=owner_id)


@router.post(
    "/{conversation_id}/snooze",
    response_model=ConversationOut,
    responses=problems(ProblemType.CONFLICT, s409="The conversation is closed"),
)
async def snooze(
    request: Request, conversation_id: str, user: CurrentUser, body: SnoozeIn | None = None
) -> Response:
    """Snooze an active conversation; a new inbound message wakes it. CLOSED is a 409."""
    until = body.until if body else None
    return await write(request, _snooze, conversation_id, user.id, until, render=CONVERSATION)


def _snooze(conn: Connection, conversation_id: str, owner_id: UUID, until: datetime | None) -> Any:
    return lifecycle.snooze(conn, conversation_id, owner_id=owner_id, until=until)


@router.post(
    "/{conversation_id}/reopen",
    response_model=ConversationOut,
    responses=problems(
        ProblemType.CONFLICT,
        s409="Another conversation is active for the customer: conversation_id names it",
    ),
)
async def reopen(request: Request, conversation_id: str, user: CurrentUser) -> Response:
    """Reopen; a 409 names the conversation already active for the same customer."""
    return await write(request, _reopen, conversation_id, user.id, render=CONVERSATION)


def _reopen(conn: Connection, conversation_id: str, owner_id: UUID) -> Any:
    return lifecycle.reopen(conn, conversation_id, owner_id=owner_id)
