"""A client that leaves an event stream is no error.

FastAPI's Server-Sent Events support runs a keep-alive task beside the route's generator
(``fastapi.routing``'s ``_keepalive_inserter``). When the client goes away the response's
memory stream is closed, and a keep-alive due at that instant raises
:class:`anyio.BrokenResourceError` out of its task group. The response has long started
(nothing can be answered any more), yet the error would travel up to the 500 handler and
be logged with a traceback, once per client that left at the wrong millisecond.

This middleware, innermost, takes such a group for what it is: when the response has
started and every exception in it is a closed stream or a vanished client, it logs one
INFO line and ends the request. Anything else is raised as before.
"""

from __future__ import annotations

import logging

import anyio
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("noclash.api")

_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, ClientDisconnect)


def client_gone(error: BaseException) -> bool:
    """True when ``error`` (a group: every leaf of it) says only that the client left."""
    if isinstance(error, BaseExceptionGroup):
        return all(client_gone(e) for e in error.exceptions)
    return isinstance(error, _GONE)


class StreamDisconnects:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except BaseExceptionGroup as group:
            if not (started and client_gone(group)):
                raise
            log.info("client left the stream %s %s", scope["method"], scope["path"])


__all__ = ["StreamDisconnects", "client_gone"]
