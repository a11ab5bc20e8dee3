"""``HEAD`` answered as its ``GET`` would be, without the body (RFC 9110, 9.3.2).

Why a middleware: FastAPI registers a ``GET`` route for ``GET`` alone, so every ``HEAD``
was a 405 whose own ``Allow`` header named ``HEAD`` (load balancers' health checks and
link checkers send ``HEAD``). Here a ``HEAD`` request runs as a ``GET`` through every
layer (authentication, rate limits, CORS), and the client gets that answer's status and
headers, ``Content-Length`` included, and no body.

An event stream never ends by itself: its ``HEAD`` ends at the answer's head. An answer
without ``Content-Length`` (a stream) is closed as soon as its head is sent, and the route
is cancelled; left running, it held the connection (and the client's next request on it)
until its first event or keep-alive ping, seconds later.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False
        async with anyio.create_task_group() as group:

            async def end() -> None:
                nonlocal ended
                if not ended:
                    ended = True
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

            async def head_only(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await send(message)
                    if not any(k.lower() == b"content-length" for k, _ in message["headers"]):
                        # A stream (no length): its head is all there is to answer, and
                        # its body may not begin for seconds. Nothing more will be sent.
                        await end()
                        group.cancel_scope.cancel()
                elif message["type"] == "http.response.body":
                    await end()

            await self.app({**scope, "method": "GET"}, receive, head_only)


__all__ = ["HeadAsGet"]
