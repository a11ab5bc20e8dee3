"""Loopback platforms: real HTTP servers that speak Meta's Graph API and Telegram's Bot API.

noclash's outbound path is tested against these, never against mocks of its own code. Each
server runs uvicorn on a free loopback port in a thread and answers in the platform's
documented request and response formats, errors included:

- :class:`LoopbackMeta`: ``GET /{version}/me?fields=id,instagram_business_account`` (who owns a
  Page access token) and ``POST /{version}/me/messages`` (the Send API: ``recipient.id``,
  ``messaging_type``, ``message.text``, ``message.metadata``), answering
  ``{"recipient_id", "message_id"}`` or ``{"error": {"message", "type", "code",
  "error_subcode", "fbtrace_id"}}``. Like Meta, it can post the *echo* of every message it
  sent back to a webhook URL, signed with the app secret (``X-Hub-Signature-256``), retrying
  until the webhook answers 200, the way Meta redelivers webhooks.
- :class:`LoopbackTelegram`: ``/bot<token>/getMe`` and ``/bot<token>/sendMessage``, answering
  ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code", "description",
  "parameters": {"retry_after"}}``.

A test scripts what the next requests get (:meth:`LoopbackPlatform.fail_next`), how slowly
the platform answers (``latency``), and reads what was received (:attr:`~LoopbackPlatform.sent`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.server import free_port


@dataclass(frozen=True)
class Received:
    """One request as the platform received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float


@dataclass(frozen=True)
class Scripted:
    """An answer the platform gives instead of its normal one."""

    status: int
    body: Any
    # Hold the answer this long before sending it (a read timeout on the client's side).
    delay: float = 0.0
    # Also perform the request's effect (the message IS sent, only the answer is bad or late).
    deliver: bool = False
    # Send the answer's body in TRICKLE_PIECES pieces, this long apart: no single read
    # waits as long as a client's read timeout, but the whole answer takes longer.
    trickle: float = 0.0


TRICKLE_PIECES = 8


class LoopbackPlatform:
    """Shared machinery: a Starlette app on a free port, a script of answers, a record."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.latency = 0.0
        self.received: list[Received] = []
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._open = threading.Event()  # cleared: every request waits (see held)
        self._open.set()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -----------------------------------------------------------------------
    def fail_next(self, count: int, status: int, body: Any, *, delay: float = 0.0,
                  deliver: bool = False, trickle: float = 0.0) -> None:  # fmt: skip
        """The next ``count`` sends get ``status`` and ``body`` instead of success."""
        with self._lock:
            self._script.extend(
                Scripted(status, body, delay, deliver, trickle) for _ in range(count)
            )

    @contextmanager
    def held(self) -> Iterator[None]:
        """Every request that arrives inside the block waits for its end before it is
        answered (a platform slow to answer, for exactly as long as a test needs)."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    def _next_scripted(self) -> Scripted | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _record(self, request: Request, body: Any) -> None:
        with self._lock:
            self.received.append(
                Received(
                    request.method,
                    request.url.path,
                    dict(request.query_params),
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                    time.time(),
                )
            )

    # -- running -------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    def start(self) -> None:
        app = Starlette(routes=self.routes())
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
            backlog=1024,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    @staticmethod
    def _answer(scripted: Scripted) -> Response:
        if not scripted.trickle:
            return JSONResponse(scripted.body, status_code=scripted.status)
        raw = json.dumps(scripted.body).encode()
        size = -(-len(raw) // TRICKLE_PIECES)

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(raw), size):
                if start:
                    await asyncio.sleep(scripted.trickle)
                yield raw[start : start + size]

        return StreamingResponse(
            pieces(), status_code=scripted.status, media_type="application/json"
        )

    async def _pause(self, scripted: Scripted | None) -> None:
        while not self._open.is_set():
            await asyncio.sleep(0.01)
        delay = self.latency + (scripted.delay if scripted else 0.0)
        if delay:
            await asyncio.sleep(delay)


# -- Meta ---------------------------------------------------------------------------------


def meta_error(code: int, message: str, *, subcode: int | None = None,
               kind: str = "OAuthException") -> dict[str, Any]:  # fmt: skip
    """A Graph API error body, as Meta documents it."""
    error: dict[str, Any] = {
        "message": f"(#{code}) {message}",
        "type": kind,
        "code": code,
        "fbtrace_id": "A" + hashlib.sha1(message.encode()).hexdigest()[:10],
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


# Errors the suite uses, as Meta answers them (HTTP status, body).
META_RATE_LIMITED = (400, meta_error(613, "Calls to this api have exceeded the rate limit."))
META_UNAVAILABLE = (400, meta_error(551, "This person isn't available right now.", subcode=1545041))
META_INVALID_TOKEN = (400, meta_error(190, "Invalid OAuth access token."))
META_SERVER_ERROR = (500, meta_error(2, "An unexpected error has occurred. Please retry your "
                                        "request later.", kind="OAuthException"))  # fmt: skip


@dataclass
class Page:
    page_id: str
    token: str
    instagram_id: str | None = None
    # message.text of every message sent through this Page, by recipient.
    inbox: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class LoopbackMeta(LoopbackPlatform):
    """Meta's Graph API for Pages: token owner lookup and the Send API, with echoes.

    ``graph_url`` is what ``NOCLASH_META_GRAPH_URL`` should be set to (it carries a version
    path, like ``https://graph.facebook.com/v21.0``).
    """

    APP_ID = "1517776481860111"

    def __init__(self) -> None:
        super().__init__()
        self.graph_url = f"{self.base}/v21.0"
        self.pages: dict[str, Page] = {}
        self._mids = itertools.count(1)
        # Echo delivery (Meta's message_echoes subscription).
        self.echo_url: str | None = None
        self.app_secret: str | None = None
        self.echo_delay = 0.0
        self.echoes_sent: list[dict[str, Any]] = []
        self._echo_queue: deque[tuple[float, bytes]] = deque()
        self._echo_thread: threading.Thread | None = None
        self._echo_stop = threading.Event()

    def add_page(self, page_id: str, token: str, *, instagram_id: str | None = None) -> Page:
        page = Page(page_id, token, instagram_id)
        self.pages[token] = page
        return page

    def echo_to(self, webhook_url: str, app_secret: str, *, delay: float = 0.0) -> None:
        """Post the echo of every sent message to ``webhook_url`` (signed), like Meta."""
        self.echo_url, self.app_secret, self.echo_delay = webhook_url, app_secret, delay
        if self._echo_thread is None:
            self._echo_thread = threading.Thread(target=self._echo_loop, daemon=True)
            self._echo_thread.start()

    @property
    def sent(self) -> list[Received]:
        """Every Send API request received (successful or not)."""
        return [r for r in self.received if r.path.endswith("/me/messages")]

    def delivered(self, page_id: str | None = None) -> list[dict[str, Any]]:
        """Messages the platform actually delivered to customers: ``{recipient, text,
        metadata, mid}``, in order."""
        out = []
        for page in self.pages.values():
            if page_id is None or page.page_id == page_id:
                for items in page.inbox.values():
                    out.extend(items)
        return sorted(out, key=lambda m: m["seq"])

    # -- routes --------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            Route("/{version}/me", self._me, methods=["GET"]),
            Route("/{version}/me/messages", self._send, methods=["POST"]),
        ]

    def _token(self, request: Request) -> Page | None:
        token = request.query_params.get("access_token")
        auth = request.headers.get("authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        return self.pages.get(token or "")

    async def _me(self, request: Request) -> Response:
        self._record(request, None)
        await self._pause(None)
        page = self._token(request)
        if page is None:
            return JSONResponse(META_INVALID_TOKEN[1], status_code=META_INVALID_TOKEN[0])
        fields = set((request.query_params.get("fields") or "id").split(","))
        body: dict[str, Any] = {"id": page.page_id}
        if "name" in fields:
            body["name"] = f"Page {page.page_id}"
        if "instagram_business_account" in fields and page.instagram_id:
            body["instagram_business_account"] = {"id": page.instagram_id}
        return JSONResponse(body)

    async def _send(self, request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        self._record(request, payload)
        scripted = self._next_scripted()
        await self._pause(scripted)
        page = self._token(request)
        if page is None:
            return JSONResponse(META_INVALID_TOKEN[1], status_code=META_INVALID_TOKEN[0])
        try:
            recipient = str(payload["recipient"]["id"])
            message = payload["message"]
            text = message["text"]
            if payload.get("messaging_type") not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
                raise KeyError("messaging_type")
        except (KeyError, TypeError):
            error = meta_error(100, "Invalid parameter", kind="OAuthException")
            return JSONResponse(error, status_code=400)
        if scripted is not None and not scripted.deliver:
            return self._answer(scripted)
        mid = f"m_loopback{next(self._mids):08d}"
        with self._lock:
            seq = sum(len(v) for p in self.pages.values() for v in p.inbox.values())
            page.inbox.setdefault(recipient, []).append(
                {"recipient": recipient, "text": text, "metadata": message.get("metadata"),
                 "mid": mid, "seq": seq, "page_id": page.page_id}
            )  # fmt: skip
        self._queue_echo(page, recipient, mid, text, message.get("metadata"), app=True)
        if scripted is not None:
            return self._answer(scripted)
        return JSONResponse({"recipient_id": recipient, "message_id": mid})

    # -- echoes --------------------------------------------------------------------------
    def page_inbox_send(self, page: Page, recipient: str, text: str) -> str:
        """A person answers from the Page inbox, outside noclash: Meta echoes it too, with
        no metadata and no app id."""
        mid = f"m_inbox{next(self._mids):08d}"
        self._queue_echo(page, recipient, mid, text, None, app=False)
        return mid

    def other_app_send(self, page: Page, recipient: str, text: str, metadata: str) -> str:
        """Another app of the Page sends a message with a ``metadata`` of its own choosing;
        Meta echoes it to every app subscribed to the Page, noclash included."""
        mid = f"m_other{next(self._mids):08d}"
        self._queue_echo(page, recipient, mid, text, metadata, app=True)
        return mid

    def _queue_echo(self, page: Page, recipient: str, mid: str, text: str,
                    metadata: str | None, *, app: bool) -> None:  # fmt: skip
        if self.echo_url is None:
            return
        ms = int(time.time() * 1000)
        instagram = page.instagram_id is not None
        own = page.instagram_id if instagram else page.page_id
        message: dict[str, Any] = {"is_echo": True, "mid": mid, "text": text}
        if app:
            message["app_id"] = int(self.APP_ID)
        if metadata is not None:
            message["metadata"] = metadata
        body = {
            "object": "instagram" if instagram else "page",
            "entry": [{
                "id": own, "time": ms,
                "messaging": [{"sender": {"id": own}, "recipient": {"id": recipient},
                               "timestamp": ms, "message": message}],
            }],
        }  # fmt: skip
        raw = json.dumps(body).encode()
        with self._lock:
            self._echo_queue.append((time.monotonic() + self.echo_delay, raw))

    def _echo_loop(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._echo_stop.is_set():
                with self._lock:
                    item = self._echo_queue[0] if self._echo_queue else None
                if item is None or item[0] > time.monotonic():
                    time.sleep(0.01)
                    continue
                _due, raw = item
                signature = (
                    "sha256="
                    + hmac.new((self.app_secret or "").encode(), raw, hashlib.sha256).hexdigest()
                )
                try:
                    answer = client.post(
                        self.echo_url or "",
                        content=raw,
                        headers={"Content-Type": "application/json",
                                 "X-Hub-Signature-256": signature},
                    )  # fmt: skip
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with self._lock:
                    if ok:
                        self._echo_queue.popleft()
                        self.echoes_sent.append(json.loads(raw))
                    else:  # Meta retries a webhook that did not answer 200
                        self._echo_queue.rotate(-1)
                if not ok:
                    time.sleep(0.2)

    def stop(self) -> None:
        self._echo_stop.set()
        if self._echo_thread is not None:
            self._echo_thread.join(timeout=5)
        super().stop()


# -- Telegram -----------------------------------------------------------------------------


def telegram_error(code: int, description: str, *, retry_after: int | None = None) -> dict:
    """A Bot API error body, as Telegram documents it."""
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return body


TELEGRAM_TOO_MANY = (429, telegram_error(429, "Too Many Requests: retry after 1", retry_after=1))
TELEGRAM_BLOCKED = (403, telegram_error(403, "Forbidden: bot was blocked by the user"))
TELEGRAM_CHAT_NOT_FOUND = (400, telegram_error(400, "Bad Request: chat not found"))
TELEGRAM_UNAUTHORIZED = (401, telegram_error(401, "Unauthorized"))
TELEGRAM_BAD_GATEWAY = (502, telegram_error(502, "Bad Gateway"))


@dataclass
class Bot:
    bot_id: int
    token: str
    username: str
    chats: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class LoopbackTelegram(LoopbackPlatform):
    """Telegram's Bot API: ``getMe`` and ``sendMessage``. ``api_url`` is what
    ``NOCLASH_TELEGRAM_API_URL`` should be set to."""

    def __init__(self) -> None:
        super().__init__()
        self.api_url = self.base
        self.bots: dict[str, Bot] = {}
        self._message_ids = itertools.count(1)
        self._seq = itertools.count()

    def add_bot(self, bot_id: int, token: str | None = None, username: str | None = None) -> Bot:
        token = token or f"{bot_id}:AAH-loopback-{bot_id}"
        bot = Bot(bot_id, token, username or f"loopback_{bot_id}_bot")
        self.bots[token] = bot
        return bot

    @property
    def sent(self) -> list[Received]:
        return [r for r in self.received if r.path.endswith("/sendMessage")]

    def delivered(self, bot_id: int | None = None) -> list[dict[str, Any]]:
        out = []
        for bot in self.bots.values():
            if bot_id is None or bot.bot_id == bot_id:
                for items in bot.chats.values():
                    out.extend(items)
        return sorted(out, key=lambda m: m["seq"])

    def routes(self) -> list[Route]:
        return [Route("/bot{token:path}/{method}", self._call, methods=["GET", "POST"])]

    async def _call(self, request: Request) -> Response:
        raw = await request.body()
        try:
            params: Any = json.loads(raw) if raw else dict(request.query_params)
        except ValueError:
            params = None
        self._record(request, params)
        method = request.path_params["method"]
        bot = self.bots.get(request.path_params["token"])
        scripted = self._next_scripted() if method == "sendMessage" else None
        await self._pause(scripted)
        if bot is None:
            return JSONResponse(TELEGRAM_UNAUTHORIZED[1], status_code=TELEGRAM_UNAUTHORIZED[0])
        if method == "getMe":
            return JSONResponse({"ok": True, "result": {
                "id": bot.bot_id, "is_bot": True, "first_name": "Loopback",
                "username": bot.username, "can_join_groups": True,
                "can_read_all_group_messages": False, "supports_inline_queries": False,
            }})  # fmt: skip
        if method != "sendMessage":
            return JSONResponse(telegram_error(404, "Not Found"), status_code=404)
        if not isinstance(params, dict) or "chat_id" not in params or not params.get("text"):
            body = telegram_error(400, "Bad Request: message text is empty")
            return JSONResponse(body, status_code=400)
        if scripted is not None and not scripted.deliver:
            return self._answer(scripted)
        chat_id = str(params["chat_id"])
        message_id = next(self._message_ids)
        with self._lock:
            bot.chats.setdefault(chat_id, []).append(
                {"chat_id": chat_id, "text": params["text"], "message_id": message_id,
                 "seq": next(self._seq), "bot_id": bot.bot_id}
            )  # fmt: skip
        if scripted is not None:
            return self._answer(scripted)
        return JSONResponse({"ok": True, "result": {
            "message_id": message_id,
            "from": {"id": bot.bot_id, "is_bot": True, "first_name": "Loopback",
                     "username": bot.username},
            "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id,
                     "type": "private"},
            "date": int(time.time()),
            "text": params["text"],
        }})  # fmt: skip


@contextmanager
def running(platform: LoopbackPlatform) -> Iterator[LoopbackPlatform]:
    platform.start()
    try:
        yield platform
    finally:
        platform.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, every: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


__all__ = [
    "META_INVALID_TOKEN",
    "META_RATE_LIMITED",
    "META_SERVER_ERROR",
    "META_UNAVAILABLE",
    "TELEGRAM_BAD_GATEWAY",
    "TELEGRAM_BLOCKED",
    "TELEGRAM_CHAT_NOT_FOUND",
    "TELEGRAM_TOO_MANY",
    "TELEGRAM_UNAUTHORIZED",
    "LoopbackMeta",
    "LoopbackTelegram",
    "Received",
    "meta_error",
    "running",
    "telegram_error",
    "wait_for",
]
