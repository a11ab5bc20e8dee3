"""Limits on request bodies, enforced once, before anything parses or hashes them.

Two limits, one ASGI middleware in front of everything else:

- **size**: a body larger than ``max_body_bytes`` is a 413, refused by its Content-Length
  before a byte is read, or by counting while it arrives (chunked). The platforms'
  webhooks (``/webhooks/...``) have a limit of their own, ``max_webhook_body_bytes``: Meta
  batches up to a thousand updates in one POST and escapes every non-ASCII character as
  ``\\uXXXX``, so a busy Page's body can be megabytes, and a 413 there is no answer a
  person reads: Meta sends the same body again, and again, and it never shrinks;
- **nesting**: a body whose brackets nest deeper than ``max_json_depth`` is a 400
  ``malformed-json``. No legitimate request nests that deep, and every parser behind this
  point recurses per level (``json.loads`` in FastAPI, in the idempotency key's request
  hash and in the webhook adapters): a body nested a thousand levels, well inside the
  size limit, would otherwise be a ``RecursionError`` deep in one of them. Checked here,
  it cannot reach any of them, whatever route or content type it is sent to.

The depth check costs two byte counts for nearly every body: one with no more opening
brackets than the limit cannot nest deeper. Only a body with more is scanned (iteratively,
at C speed, outside string literals; :func:`json_depth`).
"""

from __future__ import annotations

import logging
import re
from array import array
from itertools import accumulate

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noclash.api.errors import problem
from noclash.api.problems import ProblemType

MAX_JSON_DEPTH = 64
# Where the platforms (Meta, Telegram) post their webhooks: bodies there may be larger.
WEBHOOKS_PREFIX = "/webhooks/"

# A JSON string literal, escapes included. The body of the literal is matched possessively
# and an unterminated one runs to the end of the input, so every match attempt that starts
# at a quote succeeds and each byte is consumed once: linear on any input.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
# After the strings are gone: each bracket becomes a signed step, everything else goes.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

log = logging.getLogger("noclash.api")


def json_depth(body: bytes) -> int:
    """How deep the brackets of ``body`` nest outside string literals; no parsing.

    For valid JSON this is the nesting depth. For anything else it is a bound a parser
    cannot exceed: a parser stops at the first stray closing bracket.
    """
    steps = _STRING.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", steps)), default=0)


def nests_deeper_than(body: bytes, limit: int) -> bool:
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    return json_depth(body) > limit


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse bodies that are too large (413) or nested too deep (400) before the app runs."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_json_depth: int = MAX_JSON_DEPTH,
        max_webhook_body_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_webhook_body = max_webhook_body_bytes or max_body_bytes
        self.max_depth = max_json_depth

    def _limit(self, scope: Scope) -> int:
        path: str = scope.get("path", "")
        return self.max_webhook_body if path.startswith(WEBHOOKS_PREFIX) else self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        framed = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await self._too_large(limit, scope, receive, send)
                    return
                framed = value != b"0"
            elif name == b"transfer-encoding":
                framed = True
        if not framed:
            # No Content-Length and no Transfer-Encoding: HTTP/1.1 frames no body at all.
            await self.app(scope, receive, send)
            return
        try:
            message = await self._read(receive, limit)
        except _TooLarge:
            await self._too_large(limit, scope, receive, send)
            return
        if message["type"] != "http.request":
            # The client went away before its body arrived: nobody is left to answer, and
            # it is no error of ours (one INFO line, as at the error boundary).
            client = scope.get("client") or ("?",)
            log.info("request abandoned by %s: %s %s", client[0], scope["method"], scope["path"])
            return
        if nests_deeper_than(message.get("body", b""), self.max_depth):
            detail = f"the request body nests deeper than {self.max_depth} levels"
            await problem(400, detail, kind=ProblemType.MALFORMED_JSON)(scope, receive, send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return message

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive, limit: int) -> Message:
        """The whole body as one message (the server never hands over more than its
        Content-Length, and a chunked body is counted), or the disconnect that ended it."""
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                raise _TooLarge
            if not message.get("more_body", False):
                if not parts:
                    return message
                parts.append(chunk)
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            parts.append(chunk)

    async def _too_large(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body exceeds {limit} bytes"
        # RFC 9110's name for 413 (Python 3.11's HTTPStatus still says "Request Entity").
        answer = problem(413, detail, kind=ProblemType.BODY_TOO_LARGE, title="Content Too Large")
        await answer(scope, receive, send)
