"""Request dependencies: the engine, the settings and the caller.

Endpoints open their own transaction (``with engine.begin()``) so that the commit happens
before the response is sent and the SQL that matters stays visible in the route.
"""

from __future__ import annotations

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from noclash.chat.errors import Unauthenticated
from noclash.chat.users import User, authenticate
from noclash.config import Settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("use Authorization: Bearer <token>")
    return token.strip()


def optional_user(request: Request, engine: Engine = Depends(get_engine)) -> User | None:
    """The caller if a bearer token is given; a wrong token is a 401, not anonymous."""
    token = _bearer(request)
    if token is None:
        return None
    user = authenticate(engine, token)
    if user is None:
        raise Unauthenticated("the bearer token is not valid")
    return user


def current_user(user: User | None = Depends(optional_user)) -> User:
    if user is None:
        raise Unauthenticated("this endpoint needs Authorization: Bearer <token>")
    return user
