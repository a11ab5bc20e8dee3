"""CORS for the widget's API, per chatbot: only the origins the chatbot allows.

The widget runs on other sites' pages, so its API (``/api/widget/{public_token}/...`` and
``/api/public/chatbots/{public_token}``) is called cross-origin. A chatbot's
``allowed_origins`` (a list of ``scheme://host[:port]``) says which pages may; none set
(null) means any page may, an empty list that none may (the docs say so). For a request
carrying ``Origin``:

- allowed: the answer carries ``Access-Control-Allow-Origin: <that origin>`` (never ``*``
  with a list, ``Vary: Origin`` always), and a preflight (``OPTIONS`` with
  ``Access-Control-Request-Method``) is answered 204 with the methods and headers the
  widget sends (``Content-Type``, ``Idempotency-Key``, ``Last-Event-ID``, ``Authorization``);
- not allowed: 403 ``origin-not-allowed``, before the route runs, so a page of another
  site neither reads a route's answer nor causes a write (a form post needs no
  preflight). The refusal itself carries ``Access-Control-Allow-Origin``: it says nothing
  but "not on this site", and without it the browser hides the 403 behind a network
  error, so the widget could only say it cannot reach the chat (and offer a useless
  retry) instead of that it is not available here. A refused preflight fails as any
  non-2xx preflight does: the request it asked about is never sent.

Requests without ``Origin`` (servers, curl, same-origin GETs) are not CORS requests and
pass untouched. The allowed list is read from the database on every cross-origin request
(one indexed lookup by public token): nothing is cached, so a change applies at once on
every process. No cookies are ever involved (``Access-Control-Allow-Credentials`` is never
sent), so a stolen page cannot act as a signed-in visitor.
"""

from __future__ import annotations

import re

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noclash.api.errors import database_error, problem
from noclash.api.problems import ProblemType
from noclash.db.engine import read_only
from noclash.db.tables import chatbots
from noclash.unique.ids import parse_uuid

_WIDGET_PATHS = re.compile(r"^/api/(?:widget/([^/]+)/|public/chatbots/([^/]+)$)")
ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Content-Type, Idempotency-Key, Last-Event-ID, Authorization"
EXPOSE_HEADERS = "Idempotent-Replayed, Retry-After"
PREFLIGHT_MAX_AGE = "600"


def origin_allowed(allowed: list[str] | None, origin: str) -> bool:
    """``origin`` may use a chatbot whose list is ``allowed``: None (never set, or cleared
    with null) lets any origin; a list, the empty one included, only its own. An owner
    who empties the list has taken every site off it: reading ``[]`` as "any" would
    open the widget to every page at the moment its owner meant to close it."""
    return allowed is None or origin.lower() in allowed


class WidgetCORSMiddleware:
    def __init__(self, app: ASGIApp, *, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        match = _WIDGET_PATHS.match(scope["path"])
        origin = _header(scope, b"origin")
        if match is None or origin is None:
            await self.app(scope, receive, send)
            return
        token = match.group(1) or match.group(2)
        try:
            allowed = await anyio.to_thread.run_sync(self._allowed, token, origin)
        except (DBAPIError, PoolTimeout) as exc:
            answer = database_error(exc, scope["method"], scope["path"])
            await (answer or problem(500, "internal error", kind=ProblemType.INTERNAL))(
                scope, receive, send
            )
            return
        preflight = scope["method"] == "OPTIONS" and _header(
            scope, b"access-control-request-method"
        )
        if not allowed:
            refused = problem(
                403,
                f"the origin {origin} may not use this chatbot's widget",
                kind=ProblemType.ORIGIN_NOT_ALLOWED,
                headers={"Access-Control-Allow-Origin": origin, "Vary": "Origin"},
            )
            await refused(scope, receive, send)
            return
        cors = {
            b"access-control-allow-origin": origin.encode("latin-1"),
            b"vary": b"Origin",
        }
        if preflight:
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        *cors.items(),
                        (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                        (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                        (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in cors]
                headers += [*cors.items(), (b"access-control-expose-headers",
                                            EXPOSE_HEADERS.encode())]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _allowed(self, token: str, origin: str) -> bool:
        ident = parse_uuid(token)
        if ident is None:
            return True  # the route answers 404; nothing to protect
        with read_only(self.engine).connect() as conn:
            row = conn.execute(
                sa.select(chatbots.c.allowed_origins).where(chatbots.c.public_token == ident)
            ).first()
        return row is None or origin_allowed(row.allowed_origins, origin)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


__all__ = ["WidgetCORSMiddleware", "origin_allowed"]
