"""Request dependencies: the engine, the settings and the caller.

Dependencies that do no blocking I/O are ``async`` so that FastAPI does not hop through
its thread pool for them; the token lookup runs in a worker thread only on a cache miss.
Endpoints open their own transaction (``with engine.begin()``) so that the commit happens
before the response is sent and the SQL that matters stays visible in the route.
"""

from __future__ import annotations

import anyio
from fastapi import Request
from sqlalchemy.engine import Engine

from noclash.chat.errors import Unauthenticated
from noclash.chat.users import TokenCache, User, lookup_token
from noclash.config import Settings
from noclash.unique.ids import token_hash


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("use Authorization: Bearer <token>")
    return token.strip()


async def optional_user(request: Request) -> User | None:
    """The caller if a bearer token is given; a wrong token is a 401, not anonymous.

    It takes the engine from ``request.app.state`` rather than ``Depends(get_engine)``:
    FastAPI solves every sub-dependency on every request, and this one runs on nearly all
    of them.
    """
    token = _bearer(request)
    if token is None:
        return None
    digest = token_hash(token)
    state = request.app.state
    cache: TokenCache = state.token_cache
    user = cache.get(digest)
    if user is None:
        # The lookup blocks on the database: run it off the event loop.
        user = await anyio.to_thread.run_sync(lookup_token, state.engine, digest)
        if user is not None:
            cache.put(digest, user)
    if user is None:
        raise Unauthenticated("the bearer token is not valid")
    return user


async def current_user(request: Request) -> User:
    """The caller; no token is a 401. One dependency, not a chain (see optional_user)."""
    user = await optional_user(request)
    if user is None:
        raise Unauthenticated("this endpoint needs Authorization: Bearer <token>")
    return user
