"""``python -m bench.dispatchers --serve``: one sending process of the outbound scenario.

The outbound scenario starts one of these per dispatcher and keeps them for the whole
case. Each reads one round per JSON line on stdin and answers one JSON line on stdout;
a round is either contender, so both run in the same processes, under the same
interpreter, imports and clock:

- ``noclash``: a real :class:`noclash.dispatch.Dispatcher` on an engine made exactly as
  ``noclash worker`` makes it (:func:`noclash.db.engine.create_engine` with the settings'
  pool), with the configured Telegram sender (wrapped only to time each send), run from
  the round's start until its window ends, then stopped the way SIGTERM stops a worker;
- ``limit``: the same number of sends in flight (``dispatcher_concurrency``) as bare
  ``POST /bot<token>/sendMessage`` requests through the dispatcher's own HTTP clients
  (:class:`noclash.dispatch.dispatcher.SendClients`: the same timeouts, connections and
  pools), with no database at all.

A round's ``destination`` is ``telegram`` (replies to a Telegram customer) or ``webhook``
(events to a chatbot's webhook: noclash signs and POSTs each claimed event, the limit
POSTs an envelope of the same shape, unsigned, through the webhook clients the
dispatcher uses, :func:`noclash.channels.webhooks.client`).

The window is given in ``time.monotonic()`` seconds, a clock every process of the machine
shares, so the processes of one round measure the same interval; the parent sets it once
every process has warmed up (connections opened, the first claims made and settled).
What counts:

- throughput: deliveries *settled* in the window (sent and recorded in the database:
  :attr:`Dispatcher.settled`), bare POSTs answered 2xx in the window;
- latency: of each send (noclash) or POST (limit) that ended in the window;
- statements: every statement the engine executed in the window
  (``before_cursor_execute``, an ``executemany`` counted once, transaction control not
  counted, as :class:`bench.harness.StatementCounter` does), by kind: the claim (which
  returns the replies' texts and tokens itself, and on PostgreSQL the events' envelopes
  too), a read apart from it (``details``: of the claimed events' envelopes, on SQLite;
  for replies none), the settlement, and anything else
  (the dispatcher's once-a-second snooze wake-up, giving back unsent claims). On
  PostgreSQL the dispatcher's transactions run on an asyncio engine of its own, and on
  SQLite on a connection that never waits (falling back to the pool's when the database
  is busy): both are counted the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

from noclash.channels import webhooks
from noclash.channels.senders import senders as configured_senders
from noclash.channels.sending import Outcome, SendResult
from noclash.config import Settings
from noclash.db.engine import create_engine
from noclash.dispatch import Dispatcher
from noclash.dispatch.dispatcher import SendClients

KINDS = ("claim", "details", "settle", "other")
# A round whose contender has sent nothing after this long goes on anyway (and shows it).
WARM_UP_LIMIT = 60.0


def statement_kind(statement: str) -> str | None:
    """What a statement of the dispatcher is for (None: transaction control, not counted)."""
    head = statement.lstrip()[:30].upper()
    if head.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
        return None
    if head.startswith("WITH CLAIMED AS"):
        return "claim"  # PostgreSQL's claim, which reads its events in the same statement
    if head.startswith("UPDATE DELIVERIES"):
        if "last_error" in statement:  # only a settlement writes the outcome's error
            return "settle"
        if "RETURNING" in statement.upper():
            return "claim"
        return "other"
    if head.startswith("SELECT") and ("FROM messages" in statement or "JOIN events" in statement):
        return "details"  # a reply's text, or the claimed events' envelopes
    return "other"


class Statements:
    """Statements by kind, counted from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        kind = statement_kind(statement)
        if kind is not None:
            with self._lock:
                self.counts[kind] += 1

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._count)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


class Window:
    """The round's measuring window and what ended inside it (before the window is set,
    every send is warm-up)."""

    def __init__(self) -> None:
        self.t0 = self.t1 = sys.maxsize
        self.warm = 0  # successes before the window
        self.ok = 0
        self.errors = 0
        self.late = 0
        self.latencies_us: list[int] = []
        self.kinds: Counter[str] = Counter()

    def open(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = int(t0 * 1e9), int(t1 * 1e9)

    def record(self, started: int, outcome: str | None) -> None:
        """One send that started at ``started`` (monotonic ns) and ended now; ``outcome``
        None when it succeeded, else what went wrong."""
        end = time.monotonic_ns()
        if end < self.t0:
            self.warm += outcome is None
            return
        if end > self.t1:
            self.late += 1
            return
        if outcome is None:
            self.ok += 1
            self.latencies_us.append((end - started) // 1000)
        else:
            self.errors += 1
            self.kinds[outcome] += 1


class Timed:
    """A sender (a platform's, or the webhook sender) that times each send into the
    round's window and changes nothing else: every other attribute is the sender's."""

    def __init__(self, inner: Any, window: Window) -> None:
        self.inner = inner
        self.window = window

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def send(self, client: httpx.AsyncClient, item: Any) -> SendResult:
        started = time.monotonic_ns()
        result = await self.inner.send(client, item)
        self.window.record(started, None if result.outcome == Outcome.SENT else result.outcome)
        return result


# What the limit POSTs to a webhook: an envelope of an event's shape and size.
_ENVELOPE = {
    "type": "message.created",
    "chatbot_id": "0193a7f0-0000-7000-8000-000000000001",
    "conversation_id": "0193a7f0-0000-7000-8000-000000000002",
    "created_at": "2026-12-07T02:00:00.000000Z",
    "data": {
        "message": {
            "id": "0193a7f0-0000-7000-8000-000000000003",
            "conversation_id": "0193a7f0-0000-7000-8000-000000000002",
            "connection_id": "0193a7f0-0000-7000-8000-000000000004",
            "platform_message_id": "m-0000000",
            "direction": "in",
            "text": "hello, is anyone there?",
            "sent_at": None,
            "created_at": "2026-12-07T02:00:00.000000Z",
        }
    },
}


async def _until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class Lines:
    """The parent's side of the conversation: JSON lines on stdin and stdout."""

    async def read(self) -> dict[str, Any] | None:
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return json.loads(line) if line else None

    def write(self, message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


class Worker:
    """One process's engines (kept from round to round, as a worker keeps its pool).

    A round is three messages: the parent's ``{"kind", ...}`` starts the contender; the
    worker answers ``{"warm": true}`` once the warm-up time has passed and something was
    sent; the parent's ``{"t0", "t1"}`` (the same for every process) sets the window; the
    worker answers the round's figures once the window has ended and the contender has
    stopped.
    """

    def __init__(self, lines: Lines) -> None:
        self.lines = lines
        self.engines: dict[str, tuple[Engine, Statements]] = {}
        self.sequence = itertools.count()

    def engine(self, settings: Settings) -> tuple[Engine, Statements]:
        url = settings.sqlalchemy_url
        if url not in self.engines:
            engine = create_engine(url, settings)
            statements = Statements()
            statements.attach(engine)
            self.engines[url] = (engine, statements)
        return self.engines[url]

    async def _warm_up(self, seconds: float, warm: Any) -> tuple[float, float]:
        """Wait ``seconds`` and until ``warm()``; say so; return the window the parent sets."""
        await asyncio.sleep(seconds)
        deadline = time.monotonic() + WARM_UP_LIMIT
        while not warm() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.lines.write({"warm": bool(warm())})
        times = await self.lines.read()
        if times is None:
            raise EOFError("the parent went away during a round")
        return times["t0"], times["t1"]

    async def noclash(self, settings: Settings, warmup: float) -> dict[str, Any]:
        engine, statements = self.engine(settings)
        window = Window()
        senders: dict[str, Any] = {
            name: Timed(sender, window)
            for name, sender in configured_senders(settings).items()
        }
        hooks: Any = Timed(webhooks.WebhookSender(settings.platform_timeout_seconds), window)
        dispatcher = Dispatcher(
            engine, settings, senders=senders, webhook_sender=hooks, name=f"bench-{os.getpid()}"
        )
        if dispatcher.async_engine is not None:  # its transactions run there (PostgreSQL)
            statements.attach(dispatcher.async_engine.sync_engine)
        if dispatcher.quick_engine is not None:  # and there, unless the database is busy
            statements.attach(dispatcher.quick_engine)
        running = asyncio.create_task(dispatcher.run())
        try:
            t0, t1 = await self._warm_up(warmup, lambda: dispatcher.settled > 0)
            window.open(t0, t1)
            await _until(t0)
            settled0, counts0, cpu0 = dispatcher.settled, statements.snapshot(), time.process_time()
            await _until(t1)
            settled1, counts1, cpu1 = dispatcher.settled, statements.snapshot(), time.process_time()
        finally:
            dispatcher.stop()
            await running
        settled = settled1 - settled0
        counts = {k: counts1[k] - counts0[k] for k in KINDS}
        return {
            # Settled in the window: sent and recorded; failures are counted as errors.
            "ok": max(0, settled - window.errors),
            "errors": window.errors,
            "late": window.late,
            "error_kinds": dict(window.kinds),
            "elapsed": t1 - t0,
            "latencies_us": window.latencies_us,
            "statements": sum(counts.values()),
            "statement_kinds": counts,
            "settled_round": dispatcher.settled,
            "sent_round": dispatcher.sent,
            "cpu_s": cpu1 - cpu0,
        }

    async def limit(
        self, settings: Settings, token: str, warmup: float, hook_url: str | None = None
    ) -> dict[str, Any]:
        """Bare POSTs: Telegram sends, or (``hook_url``) event envelopes to a webhook."""
        window = Window()
        concurrency = settings.dispatcher_concurrency
        url = hook_url or f"{settings.telegram_api_url.rstrip('/')}/bot{token}/sendMessage"
        tag = f"{os.getpid()}"

        def request(seq: int) -> dict[str, Any]:
            if hook_url is None:
                return {"json": {"chat_id": str(1000 + seq % 1000), "text": f"limit {tag}-{seq}"}}
            event_id = f"limit-{tag}-{seq}"
            return {
                "content": webhooks.encode({"id": event_id, **_ENVELOPE}),
                "headers": {"Content-Type": "application/json",
                            webhooks.EVENT_ID_HEADER: event_id},
            }  # fmt: skip

        async def sender(clients: SendClients) -> None:
            slot, client = clients.acquire()
            while time.monotonic_ns() < window.t1:
                seq = next(self.sequence)
                started = time.monotonic_ns()
                try:
                    response = await client.post(url, **request(seq))
                    outcome = None if response.is_success else f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                window.record(started, outcome)
            clients.release(slot)

        clients_for = SendClients if hook_url is None else SendClients.for_webhooks
        async with clients_for(settings, concurrency) as clients:
            senders = asyncio.gather(*(sender(clients) for _ in range(concurrency)))
            try:
                t0, t1 = await self._warm_up(warmup, lambda: window.warm > 0)
            except BaseException:
                window.t1 = 0  # the senders stop after the request they are in
                await senders
                raise
            window.open(t0, t1)
            await _until(t0)
            cpu0 = time.process_time()
            await _until(t1)
            cpu1 = time.process_time()
            await senders
        return {
            "ok": window.ok,
            "errors": window.errors,
            "late": window.late,
            "error_kinds": dict(window.kinds),
            "elapsed": t1 - t0,
            "latencies_us": window.latencies_us,
            "statements": None,
            "statement_kinds": None,
            "cpu_s": cpu1 - cpu0,
        }

    async def round(self, request: dict[str, Any]) -> dict[str, Any]:
        settings = Settings(
            database_url=request["database_url"], telegram_api_url=request["api_url"],
            allow_private_webhooks=True,  # the bot is on loopback
        )  # fmt: skip
        if request["kind"] == "noclash":
            return await self.noclash(settings, request["warmup"])
        return await self.limit(
            settings, request["token"], request["warmup"], request.get("hook_url")
        )

    def close(self) -> None:
        for engine, _statements in self.engines.values():
            engine.dispose()


async def _serve() -> None:
    """Rounds until stdin closes; ``{"ready": true}`` first, once everything is imported."""
    lines = Lines()
    worker = Worker(lines)
    lines.write({"ready": True})
    try:
        while (request := await lines.read()) is not None:
            lines.write(await worker.round(request))
    finally:
        worker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatchers", description=__doc__)
    parser.add_argument("--serve", action="store_true", required=True)
    parser.parse_args(argv)
    asyncio.run(_serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
