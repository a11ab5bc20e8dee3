"""An echo bot for noclash: answers every customer message with ``echo: <text>``.

A whole bot in Python's standard library: a webhook server that receives a chatbot's
events (docs/events.md), checks each one's signature, drops an event it has handled, and
answers customer messages through noclash's API::

    export NOCLASH_URL=https://chat.example.com
    export NOCLASH_API_TOKEN=nc_...           # the chatbot owner's API token
    export NOCLASH_WEBHOOK_SECRET=whsec_...   # POST /api/chatbots/{id}/webhook-secret
    python examples/echo_bot.py --host 0.0.0.0 --port 8080

It listens on 127.0.0.1 unless told otherwise (``--host`` or ``BOT_HOST``), which only
this machine can reach: for noclash on another host to reach it, give it ``--host
0.0.0.0`` (every interface) as above, or keep 127.0.0.1 behind a reverse proxy that
serves ``https://bot.example.com/`` (TLS there, then plain HTTP to the bot). Then point
the chatbot at that public URL: ``PATCH /api/chatbots/{id}`` with
``{"webhook_url": "https://bot.example.com/", "webhook_events": ["message.created"]}``
(it answers customer messages only, so the other types need not be sent to it; it
answers 2xx to any it gets anyway). A bot on the same machine as noclash can keep
127.0.0.1, with ``"webhook_url": "http://127.0.0.1:8080/"``, but noclash refuses a
loopback or private address unless it runs with ``NOCLASH_ALLOW_PRIVATE_WEBHOOKS=1``.

noclash sends an event until the bot answers 2xx, so the bot will see some events more
than once (its answer was lost, it was slower than noclash waits, it failed). What keeps
each customer message to one answer:

- an event it has handled (same ``Noclash-Event-Id``) is answered 200 and dropped;
- a repeat that arrives while the first is still being handled is answered 503: noclash
  sends it again later, by when it is handled (or failed, and handled then);
- the reply carries ``Idempotency-Key: <event id>``: a bot that forgot what it handled
  (this one remembers in memory only, so a restart forgets) still makes one reply, as
  noclash answers the repeated request with the first one's answer;
- whatever fails before the reply is stored is answered 500, and noclash sends again.

``--fail-first N`` and ``--sleep S`` make it misbehave on purpose, for
tests/test_echo_bot.py: the first N customer messages are answered and then acknowledged
with a 500 and forgotten (a bot that crashed between its reply and its 200); every new
customer message waits S seconds before its answer (a bot slower than noclash waits).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("echo_bot")

TOLERANCE = 300  # seconds: refuse older signatures (replays) and clocks too far apart
# The most a request body is read: an event is a few KiB (a message's text and its ids).
# Bodies are read before their signature can be checked, so anyone who can reach the bot
# could otherwise make it hold as much as they send, or wait for ever on a length of -1.
MAX_BODY_BYTES = 1 << 20


def verify(body: bytes, header: str, secret: str, now: float | None = None) -> bool:
    """True when `header` (Noclash-Signature) signs `body` (the raw request body) with
    `secret`, and was made less than TOLERANCE seconds from now."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        signature, t = fields["v1"], fields["t"]
    except (KeyError, ValueError):
        return False
    if not (t.isascii() and t.isdigit() and len(t) <= 12):  # unix seconds, nothing else
        return False
    timestamp = int(t)
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE:
        return False
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


class Retry(Exception):
    """Not handled now; noclash should send the event again (answered 500)."""


class EchoBot:
    def __init__(
        self, noclash_url: str, token: str, secret: str, *, fail_first: int = 0, sleep: float = 0
    ) -> None:
        self.noclash_url = noclash_url.rstrip("/")
        self.token = token
        self.secret = secret
        self.fail_first = fail_first
        self.sleep = sleep
        self.lock = threading.Lock()
        self.handled: set[str] = set()
        self.handling: set[str] = set()

    def receive(self, body: bytes, signature: str) -> tuple[int, str]:
        """One webhook request: (status, text) to answer."""
        if not verify(body, signature, self.secret):
            log.warning("refused a request: bad or old signature")
            return 401, "bad signature"
        event = json.loads(body)
        event_id = event["id"]
        with self.lock:
            if event_id in self.handled:
                log.info("event %s: handled already, dropped", event_id)
                return 200, "duplicate"
            if event_id in self.handling:
                log.info("event %s: still being handled, asked to come back", event_id)
                return 503, "still being handled"
            self.handling.add(event_id)
        try:
            answered = self.handle(event)
        except Retry as exc:
            log.warning("event %s: not handled (%s); noclash will send it again", event_id, exc)
            return 500, str(exc)
        except Exception:
            log.exception("event %s: not handled; noclash will send it again", event_id)
            return 500, "internal error"
        finally:
            with self.lock:
                self.handling.discard(event_id)
        with self.lock:
            if answered and self.fail_first > 0:
                self.fail_first -= 1
                log.info("event %s: answered, now failing on purpose (--fail-first)", event_id)
                return 500, "failing on purpose"
            self.handled.add(event_id)
        return 200, "ok"

    def handle(self, event: dict[str, Any]) -> bool:
        """Answer a customer's message; True when this event was one. Other events (a
        conversation created, our own replies, status changes) need nothing."""
        if event["type"] != "message.created":
            return False
        message = event["data"]["message"]
        if message["direction"] != "in":
            return False
        if self.sleep:
            time.sleep(self.sleep)
        self.reply(event["conversation_id"], f"echo: {message['text']}", key=event["id"])
        return True

    def reply(self, conversation_id: str, text: str, *, key: str) -> None:
        request = urllib.request.Request(
            f"{self.noclash_url}/api/conversations/{conversation_id}/messages",
            data=json.dumps({"text": text}).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                # The event's id: a repeated event makes the same request, which noclash
                # answers with the first one's answer instead of a second reply.
                "Idempotency-Key": key,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                replayed = answer.headers.get("Idempotent-Replayed") == "true"
                log.info("event %s: %s", key, "reply already stored" if replayed else "replied")
                return
        except urllib.error.HTTPError as exc:
            status, problem = exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            raise Retry(f"noclash unreachable: {exc}") from None
        kind = _problem_type(problem)
        if status == 429 or status >= 500 or kind == "idempotency-key-in-progress":
            raise Retry(f"noclash answered {status}: {problem}")
        # Another 4xx (the conversation was closed, the token revoked): sending the event
        # again would get the same answer. Log it and let the event go.
        log.error("event %s: noclash refused the reply (%s): %s", key, status, problem)


def _problem_type(body: str) -> str:
    try:
        return str(json.loads(body).get("type", "")).rsplit("/", 1)[-1]
    except (ValueError, AttributeError):
        return ""


def serve(bot: EchoBot, host: str, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = self.headers.get("Content-Length", "")
            # noclash always sends Content-Length; anything else is refused unread.
            if not (length.isascii() and length.isdigit()):
                self.close_connection = True
                self._answer(411, "Content-Length required")
                return
            if int(length) > MAX_BODY_BYTES:
                self.close_connection = True
                self._answer(413, "body too large")
                return
            body = self.rfile.read(int(length))
            status, text = bot.receive(body, self.headers.get("Noclash-Signature") or "")
            self._answer(status, text)

        def do_GET(self) -> None:
            self._answer(200, "echo bot")

        def _answer(self, status: int, text: str) -> None:
            data = text.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # noclash stopped waiting (we were slower than its timeout): it will send
                # the event again, and the repeat is dropped then.
                log.info("noclash had stopped waiting for this answer")

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    log.info("echo bot listening on http://%s:%d/", host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="An echo bot for noclash's webhooks.")
    parser.add_argument("--host", default=env("BOT_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("BOT_PORT", "8080")))
    parser.add_argument("--noclash-url", default=env("NOCLASH_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=env("NOCLASH_API_TOKEN"),
                        help="API token (default: $NOCLASH_API_TOKEN)")  # fmt: skip
    parser.add_argument("--secret", default=env("NOCLASH_WEBHOOK_SECRET"),
                        help="webhook secret (default: $NOCLASH_WEBHOOK_SECRET)")  # fmt: skip
    parser.add_argument("--fail-first", type=int, default=0, metavar="N")
    parser.add_argument("--sleep", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args()
    if not args.token or not args.secret:
        parser.error("an API token and a webhook secret are required (flags or environment)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bot = EchoBot(
        args.noclash_url, args.token, args.secret, fail_first=args.fail_first, sleep=args.sleep
    )
    serve(bot, args.host, args.port)


if __name__ == "__main__":
    main()
