"""``HEAD`` answered as its ``GET`` would be, without the body (RFC 9110, 9.3.2).

Why a middleware: FastAPI registers a ``GET`` route for ``GET`` alone, so every ``HEAD``
was a 405 whose own ``Allow`` header named ``HEAD`` (load balancers' health checks and
link checkers send ``HEAD``). Here a ``HEAD`` request runs as a ``GET`` through every
layer (authentication, rate limits, CORS), and the client gets that answer's status and
headers, ``Content-Length`` included, and no body.

An event stream never ends by itself: its ``HEAD`` ends at the answer's head. The body
is closed at once, and the server then tells the route that the client has gone (a
finished answer's ``receive`` says ``http.disconnect``), so the stream stops.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def head_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body" and not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, head_only)


__all__ = ["HeadAsGet"]
