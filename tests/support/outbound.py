"""The outbound path under test: the app, a real dispatcher and the loopback platforms.

:func:`outbound_stack` starts the loopback Meta and Telegram servers, the real app on a
free port with ``NOCLASH_META_GRAPH_URL`` and ``NOCLASH_TELEGRAM_API_URL`` pointing at
them, and a :class:`~noclash.dispatch.Dispatcher` on the app's engine in a thread of its
own (its own event loop, as in ``noclash serve``). Retry delays are shortened so a test
sees several attempts in a second; nothing of noclash is replaced.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from noclash.channels.meta import sign
from noclash.chat.wakeups import Hub
from noclash.config import Settings
from noclash.db.engine import create_engine
from noclash.db.tables import deliveries
from noclash.dispatch import Dispatcher
from tests.channels import messenger_body
from tests.support.platforms import LoopbackMeta, LoopbackTelegram, running, wait_for
from tests.support.server import LiveServer, start_live_server

APP_SECRET = "loopback-app-secret"
# Fast retries: the tests watch several attempts in well under a second.
FAST = {
    "dispatcher_poll_seconds": 0.05,
    "delivery_backoff_seconds": 0.05,
    "delivery_backoff_max_seconds": 0.2,
    "meta_rate_limit_seconds": 0.1,
    "delivery_lease_seconds": 5.0,
    "platform_timeout_seconds": 1.0,
    "meta_echo_wait_seconds": 3.0,
    "meta_app_secret": APP_SECRET,
}


def telegram_update(update_id: int, text: str, chat_id: int) -> dict:
    """A customer's message as Telegram delivers it (an ``Update``, as documented)."""
    return {
        "update_id": update_id,
        "message": {"message_id": update_id, "date": int(time.time()),
                    "chat": {"id": chat_id, "type": "private", "first_name": "Ada"},
                    "from": {"id": chat_id, "is_bot": False, "first_name": "Ada"},
                    "text": text},
    }  # fmt: skip


def delivery_statuses(url: str, destination: str | None = None) -> Counter:
    """How many deliveries (to ``destination``, or all) are in each status, read from the
    database at ``url`` (for tests whose server is another process)."""
    engine = create_engine(url)
    try:
        query = sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)
        if destination is not None:
            query = query.where(deliveries.c.destination == destination)
        with engine.connect() as conn:
            return Counter({status: n for status, n in conn.execute(query)})
    finally:
        engine.dispose()


class RunningDispatcher:
    """A dispatcher on its own event loop in a daemon thread."""

    def __init__(
        self, engine: Engine, settings: Settings, name: str = "test", hub: Hub | None = None
    ) -> None:
        self.dispatcher = Dispatcher(engine, settings, name=name, hub=hub)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.dispatcher.run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> RunningDispatcher:
        self._thread.start()
        wait_for(lambda: self.dispatcher._loop is not None, timeout=10)
        return self

    def stop(self) -> None:
        self.dispatcher.stop()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the dispatcher did not stop"
        if self.error is not None:
            raise self.error


@contextmanager
def dispatching(
    engine: Engine, settings: Settings, name: str = "test", hub: Hub | None = None
) -> Iterator[Dispatcher]:
    running_one = RunningDispatcher(engine, settings, name, hub).start()
    try:
        yield running_one.dispatcher
    finally:
        running_one.stop()


@dataclass
class Stack:
    server: LiveServer
    meta: LoopbackMeta
    telegram: LoopbackTelegram
    dispatcher: Dispatcher | None
    token: str

    @property
    def api(self) -> httpx.Client:
        return self.server.client(self.token)

    def chatbot(self, client: httpx.Client | None = None, **body: Any) -> dict:
        client = client or self.api
        answer = client.post("/api/chatbots", json={"name": "support", **body})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def telegram_connection(self, chatbot_id: str, bot_id: int = 7001) -> tuple[dict, str]:
        """A Telegram connection with a verified bot token; returns it and the token."""
        bot = self.telegram.add_bot(bot_id)
        answer = self.api.post(
            f"/api/chatbots/{chatbot_id}/connections",
            json={"channel": "telegram", "external_id": str(bot_id), "secret": "s3cret",
                  "access_token": bot.token},
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
        return answer.json(), bot.token

    def meta_connection(self, chatbot_id: str, page_id: str = "104871234567890") -> dict:
        page = self.meta.add_page(page_id, f"page-token-{page_id}")
        answer = self.api.post(
            f"/api/chatbots/{chatbot_id}/connections",
            json={"channel": "messenger", "external_id": page_id, "access_token": page.token},
        )
        assert answer.status_code == 201, answer.text
        return answer.json()

    def telegram_customer(self, connection: dict, chat_id: int, text: str, update_id: int) -> dict:
        """A customer's Telegram message in, through the real webhook; its conversation."""
        answer = self.server.client().post(
            f"/webhooks/telegram/{connection['id']}",
            json=telegram_update(update_id, text, chat_id),
            headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
        )
        assert answer.status_code == 200, answer.text
        return self.conversation_of(str(chat_id))

    def post_meta(self, body: bytes) -> dict:
        """``body`` posted to the real Meta webhook, signed with the app secret; its
        receipt (asserted 200)."""
        answer = self.server.client().post(
            "/webhooks/meta",
            content=body,
            headers={"Content-Type": "application/json",
                     "X-Hub-Signature-256": sign(body, APP_SECRET)},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        return answer.json()

    def meta_customer(self, page_id: str, psid: str, text: str, mid: str) -> dict:
        """A customer's Messenger message in, signed, through the real webhook."""
        self.post_meta(messenger_body(page_id, psid, mid, text, int(time.time() * 1000)))
        return self.conversation_of(psid)

    def conversation_of(self, psid: str) -> dict:
        found = self.api.get("/api/conversations", params={"psid": psid}).json()["items"]
        assert found, f"no conversation for {psid}"
        return found[-1]

    def reply(self, conversation_id: str, text: str, key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return self.api.post(
            f"/api/conversations/{conversation_id}/messages", json={"text": text}, headers=headers
        )

    def message(self, conversation_id: str, message_id: str) -> dict:
        items = self.api.get(
            f"/api/conversations/{conversation_id}/messages", params={"limit": 200}
        ).json()["items"]
        return next(m for m in items if m["id"] == message_id)

    def wait_delivery(
        self, conversation_id: str, message_id: str, *statuses: str, timeout: float = 15
    ) -> dict:
        """The message once its delivery's status is one of ``statuses``."""
        seen: dict = {}

        def settled() -> bool:
            seen.update(self.message(conversation_id, message_id))
            return (seen.get("delivery") or {}).get("status") in statuses

        assert wait_for(settled, timeout=timeout, every=0.05), seen
        return seen


@contextmanager
def outbound_stack(
    database_url: str, *, dispatcher: bool = True, **overrides: Any
) -> Iterator[Stack]:
    with running(LoopbackMeta()) as meta, running(LoopbackTelegram()) as telegram:
        options = (
            FAST
            | {
                "meta_graph_url": meta.graph_url,
                "telegram_api_url": telegram.api_url,
            }
            | overrides
        )
        with start_live_server(database_url, **options) as server:
            meta.echo_to(f"{server.base_url}/webhooks/meta", APP_SECRET)
            token = server.user()
            if not dispatcher:
                yield Stack(server, meta, telegram, None, token)
                return
            # Wired as noclash serve wires it: to the app's hub, which wakes it.
            hub = server.app.state.hub
            with dispatching(server.engine, server.settings, hub=hub) as running_dispatcher:
                yield Stack(server, meta, telegram, running_dispatcher, token)


__all__ = [
    "APP_SECRET",
    "FAST",
    "RunningDispatcher",
    "Stack",
    "delivery_statuses",
    "dispatching",
    "outbound_stack",
    "telegram_update",
]
