"""A loopback bot: a real HTTP server that receives a chatbot's webhook events.

Like the loopback platforms (:mod:`tests.support.platforms`), it runs uvicorn on a free
loopback port in a thread. It records every request exactly as it arrived (the raw body
too, so a test can check the signature over the very bytes sent) and answers 200, unless a
test scripts otherwise: :meth:`~tests.support.platforms.LoopbackPlatform.fail_next` for
the next answers (a 500, a delay longer than noclash's timeout), :attr:`LoopbackBot.answer`
for every answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from noclash.db.tables import WEBHOOK_DESTINATION, chatbots, deliveries
from tests.support.outbound import Stack, outbound_stack
from tests.support.platforms import LoopbackPlatform, Received, running


class LoopbackBot(LoopbackPlatform):
    """``POST /hook``: the bot's webhook. ``url`` is what a chatbot's ``webhook_url`` should
    be set to."""

    def __init__(self) -> None:
        super().__init__()
        self.url = f"{self.base}/hook"
        # (status, body) every unscripted request gets; None: 200 {"ok": true}.
        self.answer: tuple[int, Any] | None = None

    def routes(self) -> list[Route]:
        return [Route("/hook", self._hook, methods=["POST"])]

    async def _hook(self, request: Request) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:  # the sender died mid-request (a kill -9): nothing arrived
            return Response(status_code=400)
        self._record(request, raw)
        scripted = self._next_scripted()
        await self._pause(scripted)
        if scripted is not None:
            return JSONResponse(scripted.body, status_code=scripted.status)
        if self.answer is not None:
            return JSONResponse(self.answer[1], status_code=self.answer[0])
        return JSONResponse({"ok": True})

    # -- what arrived --------------------------------------------------------------------
    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """Every event received, repeats included, in arrival order."""
        out = [json.loads(r.body) for r in self.requests]
        return [e for e in out if type is None or e["type"] == type]

    def of_event(self, event_id: str) -> list[Received]:
        """Every request that carried ``event_id``."""
        return [r for r in self.requests if r.headers.get("noclash-event-id") == event_id]


@contextmanager
def bot_stack(database_url: str, **overrides: Any) -> Iterator[tuple[Stack, LoopbackBot]]:
    """The outbound stack (app, dispatcher, loopback Telegram) and a loopback bot."""
    with running(LoopbackBot()) as bot, outbound_stack(database_url, **overrides) as stack:
        yield stack, bot


def pulled_events(stack: Stack, chatbot_id: str, type: str | None = None) -> list[dict]:
    """The chatbot's events (of ``type``, or all) as the pull API answers them (one page
    of up to 200)."""
    params = {"chatbot_id": chatbot_id, "limit": 200} | ({"type": type} if type else {})
    answer = stack.api.get("/api/events", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def store_webhook_url(stack: Stack, chatbot_id: str, url: str) -> None:
    """Set a chatbot's webhook_url around the API's check, as another tool or an older
    version could have written it."""
    with stack.server.engine.begin() as conn:
        conn.execute(
            sa.update(chatbots).where(chatbots.c.id == UUID(chatbot_id)).values(webhook_url=url)
        )


def webhook_deliveries(stack: Stack) -> list[Any]:
    """Every webhook delivery row, oldest first."""
    with stack.server.engine.connect() as conn:
        return conn.execute(
            sa.select(deliveries)
            .where(deliveries.c.destination == WEBHOOK_DESTINATION)
            .order_by(deliveries.c.id)
        ).all()


__all__ = [
    "LoopbackBot",
    "bot_stack",
    "pulled_events",
    "store_webhook_url",
    "webhook_deliveries",
]
