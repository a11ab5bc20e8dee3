"""Request dependencies: the engine, the settings and the caller, as ``Annotated`` types.

Routes declare ``user: CurrentUser`` or ``settings: SettingsDep`` instead of repeating
``Depends(...)``. Every dependency here is ``async`` and does no blocking I/O on the event
loop, so FastAPI never hops through its thread pool to solve them; the token lookup runs in
a worker thread, and only on a cache miss.

The caller is resolved once per request: :func:`resolve_caller` keeps its answer in the
request's scope, so the idempotency middleware (which needs the caller to scope a key
before the route runs) and the route's dependency share one lookup, and a keyed request
never checks a second pool connection out while it holds its transaction's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from starlette.types import Scope

from noclash.chat.errors import Forbidden, Unauthenticated
from noclash.chat.users import TokenCache, User, lookup_token
from noclash.config import Settings
from noclash.unique.ids import token_hash

# Where the resolved caller is kept in ``scope["state"]`` (what ``request.state`` reads).
CALLER_STATE = "noclash.caller"


@dataclass(frozen=True, slots=True)
class _Resolved:
    user: User | None
    error: Unauthenticated | None = None


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            if not value:
                return None
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("use Authorization: Bearer <token>")
            return token.strip()
    return None


def bearer_digest(scope: Scope) -> str | None:
    """The hash of the request's bearer token (what the database stores), or None: for a
    long request (a live stream) that checks now and then that its token still holds
    (:func:`still_valid`)."""
    try:
        token = _bearer(scope)
    except Unauthenticated:
        return None
    return token_hash(token) if token is not None else None


async def still_valid(scope: Scope, digest: str) -> bool:
    """Whether the token hashed ``digest`` still names a user: as a new request would find
    it (the process's token cache, then the database), so a revoke or rotate is seen at
    once in the process that made it and within ``NOCLASH_AUTH_CACHE_SECONDS`` in others."""
    state = scope["app"].state
    cache: TokenCache = state.token_cache
    if cache.get(digest) is not None:
        return True
    generation = cache.generation
    user = await anyio.to_thread.run_sync(lookup_token, state.engine, digest)
    if user is not None:
        cache.put(digest, user, generation)
    return user is not None


async def _lookup(scope: Scope) -> User | None:
    token = _bearer(scope)
    if token is None:
        return None
    digest = token_hash(token)
    state = scope["app"].state
    cache: TokenCache = state.token_cache
    user = cache.get(digest)
    if user is None:
        # The lookup blocks on the database: run it off the event loop.
        generation = cache.generation
        user = await anyio.to_thread.run_sync(lookup_token, state.engine, digest)
        if user is not None:
            cache.put(digest, user, generation)
    if user is None:
        raise Unauthenticated("the bearer token is not valid")
    return user


async def resolve_caller(scope: Scope) -> User | None:
    """The caller if a bearer token is given, None without one; a wrong token raises
    :class:`Unauthenticated` (a 401, never anonymous). Resolved once per request.

    A database error propagates and is not remembered: the request fails with it.
    """
    state = scope.setdefault("state", {})
    resolved: _Resolved | None = state.get(CALLER_STATE)
    if resolved is None:
        try:
            resolved = _Resolved(await _lookup(scope))
        except Unauthenticated as exc:
            resolved = _Resolved(None, exc)
        state[CALLER_STATE] = resolved
    if resolved.error is not None:
        raise resolved.error
    return resolved.user


async def optional_user(request: Request) -> User | None:
    """The caller or None. It reads ``request.scope`` rather than depending on
    ``get_engine``: FastAPI solves every sub-dependency on every request, and this one runs
    on nearly all of them."""
    return await resolve_caller(request.scope)


async def current_user(request: Request) -> User:
    """The caller; no token is a 401. One dependency, not a chain (see optional_user)."""
    user = await resolve_caller(request.scope)
    if user is None:
        raise Unauthenticated("this endpoint needs Authorization: Bearer <token>")
    return user


async def admin_user(request: Request) -> User:
    """The caller, who must be an administrator (``is_admin``): 401 without a valid token,
    403 with another user's."""
    user = await current_user(request)
    if not user.is_admin:
        raise Forbidden("this endpoint is for administrators")
    return user


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]
OptionalUser = Annotated[User | None, Depends(optional_user)]

__all__ = [
    "CALLER_STATE",
    "AdminUser",
    "CurrentUser",
    "EngineDep",
    "OptionalUser",
    "SettingsDep",
    "admin_user",
    "current_user",
    "get_engine",
    "get_settings",
    "optional_user",
    "resolve_caller",
]
