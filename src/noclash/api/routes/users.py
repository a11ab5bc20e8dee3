"""``/api/users``: the operator's user administration, for administrators only.

The HTTP face of ``noclash user list|create|rotate-token|revoke``, calling the same
functions (:mod:`noclash.chat.users`). Every route needs a caller whose ``is_admin`` is
set: another user's token is a 403 ``forbidden``. An API token is shown once, in the
answer that issues it (create, rotate); the database keeps only its hash. That answer is
therefore never stored for an ``Idempotency-Key`` replay either (the key is refused on
``POST /api/users``): a create retried after a lost answer gets a 409 on the e-mail, and
rotate-token issues a new token.

A revoke or rotate takes effect at once in the process that made it; other processes
accept the old token for at most ``NOCLASH_AUTH_CACHE_SECONDS`` (their token cache).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.responses import Response

from noclash.api.deps import AdminUser
from noclash.api.idempotency import REPLAYABLE
from noclash.api.pagination import Page, PageDep, PageParams, page
from noclash.api.problems import ProblemType
from noclash.api.responses import Rendered, problems
from noclash.api.schemas import StrictModel
from noclash.api.work import read, write
from noclash.chat import users as chat
from noclash.chat.errors import InvalidInput, NotFound
from noclash.db.tables import max_length, users
from noclash.unique.ids import parse_uuid

router = APIRouter(prefix="/api/users", tags=["users"])


class UserIn(StrictModel):
    email: str = Field(
        min_length=3, max_length=max_length(users.c.email), pattern=chat.EMAIL_PATTERN
    )
    is_admin: bool = False


class UserOut(BaseModel):
    id: UUID
    email: str
    is_admin: bool
    created_at: datetime
    # Set while the user's token is revoked; rotate-token clears it.
    token_revoked_at: datetime | None


class UserTokenOut(UserOut):
    token: str = Field(description="The user's API token: shown this once, never again.")


USER = Rendered(UserOut, 200)
USER_TOKEN_CREATED = Rendered(UserTokenOut)
USER_TOKEN = Rendered(UserTokenOut, 200)
USER_PAGE = Rendered(Page[UserOut], 200)


def _with_token(account: chat.Account, token: str) -> dict:
    return {**asdict(account), "token": token}


@router.get("", response_model=Page[UserOut])
async def list_users(request: Request, params: PageDep, _admin: AdminUser) -> Response:
    """Every user, oldest first: e-mail, admin, created, revoked (never a token)."""
    return await read(request, _list, params, render=USER_PAGE)


def _list(conn: Connection, params: PageParams) -> dict:
    return page(chat.accounts(conn, after=params.after, limit=params.fetch), params)


@router.post(
    "",
    status_code=201,
    response_model=UserTokenOut,
    responses=problems(ProblemType.UNIQUE_VIOLATION, s409="The e-mail is taken"),
    openapi_extra={REPLAYABLE: False},
)
async def create_user(request: Request, body: UserIn, _admin: AdminUser) -> Response:
    """Create a user; the answer holds its API token, shown this once. A taken e-mail is a
    409 naming ``email``."""
    return await write(request, _create, body, render=lambda r: USER_TOKEN_CREATED(_with_token(*r)))


def _create(conn: Connection, body: UserIn) -> tuple[chat.Account, str]:
    try:
        return chat.add_user(conn, body.email, is_admin=body.is_admin)
    except chat.InvalidEmail as exc:
        raise InvalidInput(str(exc), field="email") from None


@router.post("/{user_id}/rotate-token", response_model=UserTokenOut)
async def rotate_token(request: Request, user_id: str, _admin: AdminUser) -> Response:
    """Give the user a new API token (returned this once); the old one stops working, and
    a revoked user is active again."""
    account, token = await write(request, _replace, user_id, False)
    request.app.state.token_cache.forget(account.id)
    return USER_TOKEN(_with_token(account, token))


@router.post("/{user_id}/revoke", response_model=UserOut)
async def revoke_token(request: Request, user_id: str, _admin: AdminUser) -> Response:
    """Make the user's API token stop working (its chatbots stay); rotate-token issues a
    new one. Revoking the caller's own token is allowed: the CLI can always rotate it."""
    account, _token = await write(request, _replace, user_id, True)
    request.app.state.token_cache.forget(account.id)
    return USER(account)


def _replace(conn: Connection, user_id: str, revoke: bool) -> tuple[chat.Account, str]:
    ident = parse_uuid(user_id)
    if ident is None:
        raise NotFound("user not found")
    try:
        return chat.replace_token(conn, user_id=ident, revoke=revoke)
    except chat.UnknownUser:
        raise NotFound("user not found") from None
