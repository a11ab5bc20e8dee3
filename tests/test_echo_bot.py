"""The example bot (examples/echo_bot.py) answers each customer message once, for real.

It runs as a subprocess, with nothing but the standard library, in front of the real app,
a real dispatcher and the loopback Telegram, on SQLite and PostgreSQL. A customer writes
through the real ``/webhooks/telegram/{id}``; the bot gets the event at its webhook,
verifies it and answers through the API; exactly one ``echo: ...`` reaches Telegram:

- when its first answer to the event is a 500 (it replied, then failed before its 200,
  and forgot): the redelivered event makes the same keyed request, replayed by noclash;
- when it is slower than ``NOCLASH_PLATFORM_TIMEOUT_SECONDS`` (1 s here): noclash gives
  up waiting and sends the event again; the bot drops the repeat by its event id.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import sqlalchemy as sa
from bench.processes import stop

from noclash.db.tables import deliveries
from tests.support.outbound import Stack, outbound_stack
from tests.support.platforms import wait_for
from tests.support.server import free_port

ROOT = Path(__file__).parents[1]
ECHO_BOT = ROOT / "examples" / "echo_bot.py"
CHAT = 5551234


@dataclass
class RunningBot:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def echo_bot(stack: Stack, secret: str, workdir: Path, *args: str) -> Iterator[RunningBot]:
    """examples/echo_bot.py on a free port, configured by its environment."""
    port = free_port()
    log_path = workdir / f"echo-bot-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ECHO_BOT), "--port", str(port),
             "--noclash-url", stack.server.base_url, *args],
            env=os.environ | {"NOCLASH_API_TOKEN": stack.token, "NOCLASH_WEBHOOK_SECRET": secret},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    bot = RunningBot(proc, f"http://127.0.0.1:{port}/", log_path)
    try:

        def up() -> bool:
            assert proc.poll() is None, bot.log()
            try:
                return httpx.get(bot.url, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_for(up, timeout=20, every=0.1), bot.log()
        yield bot
    finally:
        stop(proc)


def _chatbot_for(stack: Stack) -> tuple[dict, dict, str]:
    chatbot = stack.chatbot()
    secret = stack.api.post(f"/api/chatbots/{chatbot['id']}/webhook-secret").json()
    connection, _token = stack.telegram_connection(chatbot["id"])
    return chatbot, connection, secret["webhook_secret"]


def _point(stack: Stack, chatbot: dict, url: str) -> None:
    answer = stack.api.patch(f"/api/chatbots/{chatbot['id']}", json={"webhook_url": url})
    assert answer.status_code == 200, answer.text


def _message_event(stack: Stack, chatbot: dict, text: str) -> dict:
    items = stack.api.get("/api/events", params={"chatbot_id": chatbot["id"]}).json()["items"]
    return next(
        e for e in items
        if e["type"] == "message.created" and e["data"]["message"]["text"] == text
    )  # fmt: skip


def _attempts(stack: Stack, event_id: str) -> tuple[str, int]:
    with stack.server.engine.connect() as conn:
        row = conn.execute(
            sa.select(deliveries.c.status, deliveries.c.attempts).where(
                deliveries.c.event_id == UUID(event_id)
            )
        ).one()
    return row.status, row.attempts


def _one_echo(stack: Stack, conversation: dict, text: str) -> None:
    """Exactly one ``echo: <text>`` reached Telegram and is stored, now and a moment later."""
    echo = f"echo: {text}"
    assert wait_for(lambda: echo in [m["text"] for m in stack.telegram.delivered()], timeout=20)
    time.sleep(1.5)  # room for a second reply, were there one
    assert [m["text"] for m in stack.telegram.delivered()] == [echo]
    items = stack.api.get(f"/api/conversations/{conversation['id']}/messages").json()["items"]
    assert [(m["direction"], m["text"]) for m in items] == [("in", text), ("out", echo)]


def test_one_reply_when_the_bots_first_answer_is_a_500(database_url, tmp_path):
    with outbound_stack(database_url) as stack:
        chatbot, connection, secret = _chatbot_for(stack)
        with echo_bot(stack, secret, tmp_path, "--fail-first", "1") as bot:
            _point(stack, chatbot, bot.url)
            conversation = stack.telegram_customer(connection, CHAT, "hello", update_id=1)
            _one_echo(stack, conversation, "hello")
            event = _message_event(stack, chatbot, "hello")
            assert wait_for(lambda: _attempts(stack, event["id"]) == ("sent", 2), timeout=10), (
                _attempts(stack, event["id"])
            )
            log = bot.log()
            assert "now failing on purpose" in log and "reply already stored" in log, log


def test_one_reply_when_the_bot_is_slower_than_noclash_waits(database_url, tmp_path):
    with outbound_stack(database_url) as stack:
        assert stack.server.settings.platform_timeout_seconds == 1.0
        chatbot, connection, secret = _chatbot_for(stack)
        with echo_bot(stack, secret, tmp_path, "--sleep", "2") as bot:
            _point(stack, chatbot, bot.url)
            conversation = stack.telegram_customer(connection, CHAT, "anyone?", update_id=2)
            _one_echo(stack, conversation, "anyone?")
            event = _message_event(stack, chatbot, "anyone?")
            assert wait_for(lambda: _attempts(stack, event["id"])[0] == "sent", timeout=10)
            assert _attempts(stack, event["id"])[1] >= 2, "noclash timed out and sent it again"
            log = bot.log()
            assert f"event {event['id']}: handled already, dropped" in log, log
            assert "reply already stored" not in log, "the bot's dedupe, not the key, held it"
