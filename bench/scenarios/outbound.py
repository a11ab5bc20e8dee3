"""Scenario 5, outbound: deliveries per second through dispatchers, against a 20 ms platform.

One case per database and dispatcher count (1 and 4 in a full run), for each of two
kinds of delivery: ``deliveries`` (replies to a Telegram customer, issue 12) and
``webhook deliveries`` (events to a chatbot's webhook, issue 13). The platform is a
Telegram ``sendMessage`` server (:mod:`bench.botapi`) that answers every send after
20 ms, in its own process; the same server is the chatbot's webhook (``POST /hook``,
answered after the same 20 ms). Contenders, measured in alternating rounds:

- ``noclash``: ``N`` real :class:`noclash.dispatch.Dispatcher` instances, one per process
  (:mod:`bench.dispatchers`), claiming from one database a backlog of replies queued
  before the round, sending them and settling them;
- ``limit``: the same ``N`` processes, each keeping ``dispatcher_concurrency`` bare
  ``POST /bot<token>/sendMessage`` requests (or, for webhooks, bare POSTs of an event's
  envelope, unsigned) in flight to the same server through the dispatcher's own HTTP
  clients (:class:`noclash.dispatch.dispatcher.SendClients`: the same timeouts,
  connections and pools), and no database: what sending costs on this machine with
  nothing recorded.

A round starts the contender in every process, waits until each has warmed up (its
connections open, something sent and, for noclash, settled) and then measures one window
of the same ``time.monotonic()`` interval in every process: deliveries settled (sent and
recorded) or POSTs answered 2xx in the window, per second, summed over the processes.

Why processes, and why for 1 dispatcher too: a deployment runs one dispatcher per process
(``noclash worker``, or one in each ``noclash serve`` process). Four dispatchers in one
process would share one GIL and one event loop and measure that instead of four
dispatchers; four processes on one SQLite file also meet the file's write lock the way
four workers do, and on PostgreSQL each has its own pool and claims disjoint rows with
``FOR UPDATE SKIP LOCKED``. The single dispatcher runs in a process of the same kind so
that 1 and 4 differ only in the count. On this 2-core machine the processes compete for
the cores with the platform and (for PostgreSQL) the server, and they do so alike for
both contenders: the limit has the same processes, the same platform and the same number
of sends in flight, and differs only by doing no database work, which is exactly the cost
the ratio is meant to show.

Each round's backlog (one reply, or one event for the webhook, in each of as many
conversations as the round can send: twice what the fastest round of either contender
so far sent in the time of the longest round, or what the platform's ceiling would allow
before any round) is written before the round, outside the timed part, with bulk
INSERTs of the rows :func:`noclash.chat.messages.send_reply` writes: a message and its
``queued`` delivery (for the webhook: an event and its delivery). Replies of one
conversation wait for each other (the order rule), so one reply per conversation is
what lets every delivery of the backlog be due at once. Whatever a round leaves pending
is marked ``failed`` before the next one is queued, so every round starts from the same
state. On PostgreSQL the table is then analyzed, as autovacuum would after a change of
that size, so the claim is planned with the statistics a running server has.
Conversations are reused from round to round (each gains one delivery per round, as a
conversation gains replies), so the claim's look for an older pending delivery reads a
history that grows as it would.

After the case the platform and the database are compared: a text the platform received
twice (``dup_sends``), a send the platform received that the database does not record as
sent (``unrecorded``), a claim still ``sending`` after its dispatcher stopped
(``unsettled``: a clean stop settles or gives back every claim), a delivery settled as
anything but sent (``not_sent``: a failure, or ``unknown`` after an answer that never
came), and rounds whose backlog ran out before the window ended (``starved_rounds``: the
figure would then be the backlog's, not the dispatchers').
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Engine

import noclash
from bench.botapi import PlatformProcess, platform_server
from bench.databases import noclash_engine
from bench.harness import CaseSpec, Config, Contender, RoundResult
from bench.processes import wait_or_kill
from bench.scenarios import Env, make_owner
from noclash.chat.events import EventType
from noclash.config import Settings
from noclash.db.tables import (
    PENDING_DELIVERY,
    WEBHOOK_DESTINATION,
    Channel,
    DeliveryStatus,
    chatbots,
    connections,
    conversations,
    deliveries,
    events,
    messages,
)
from noclash.db.types import utcnow
from noclash.dispatch.dispatcher import MAX_AHEAD
from noclash.unique import uuid7

CONTENDERS = ("noclash", "limit")
# The cases' labels by destination, and what the platform counts each one's sends as.
LABELS = {Channel.TELEGRAM: "deliveries", WEBHOOK_DESTINATION: "webhook deliveries"}
RECEIVED_AS = {Channel.TELEGRAM: "reply", WEBHOOK_DESTINATION: "event"}
ROOT = Path(__file__).resolve().parents[2]
PLATFORM_LATENCY = 0.020  # seconds the platform takes to answer a send
BOT_TOKEN = "424242:bench-token"
STARTUP_SECONDS = 120
ROUND_OVER = "bench: still pending when its round ended"
# The backlog is this much larger than the fastest round so far could send in the time
# of the longest round.
BACKLOG_MARGIN = 2.0
# The window opens this long after the last process said it was warm (so that the message
# setting it reaches every process before it opens).
WINDOW_DELAY = 0.02


def _env() -> dict[str, str]:
    """The child processes import this checkout's bench and noclash, whatever is installed."""
    env = dict(os.environ)
    src = Path(noclash.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(src), env.get("PYTHONPATH", "")) if p
    )
    return env


class Fleet:
    """``count`` processes of :mod:`bench.dispatchers`, kept for a whole case."""

    def __init__(self, count: int, logs: Path, tag: str) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.logs = [logs / f"dispatcher-{tag}-{i}.log" for i in range(count)]
        for log in self.logs:
            with log.open("wb") as err:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.dispatchers", "--serve"], cwd=ROOT,
                        env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=err, text=True,
                    )
                )  # fmt: skip
        for proc, log in zip(self.procs, self.logs, strict=True):
            if json.loads(self._readline(proc, log)) != {"ready": True}:
                raise RuntimeError(f"dispatcher process did not start: {log}")

    @staticmethod
    def _readline(proc: subprocess.Popen[str], log: Path) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"dispatcher process failed: {log.read_text()[-3000:]}")
        return line

    def round(self, request: dict[str, Any], warmup: float, seconds: float) -> RoundResult:
        """Every process runs the round in the same window, set once all have warmed up;
        their figures are summed."""
        self._send({**request, "warmup": warmup})
        for proc, log in zip(self.procs, self.logs, strict=True):
            json.loads(self._readline(proc, log))  # {"warm": ...}
        t0 = time.monotonic() + WINDOW_DELAY
        self._send({"t0": t0, "t1": t0 + seconds})
        reports = [
            json.loads(self._readline(proc, log))
            for proc, log in zip(self.procs, self.logs, strict=True)
        ]
        self.last_reports = reports
        kinds: Counter[str] = Counter()
        statement_kinds: Counter[str] = Counter()
        counted = all(r["statements"] is not None for r in reports)
        for r in reports:
            kinds.update(r["error_kinds"])
            statement_kinds.update(r["statement_kinds"] or {})
        return RoundResult(
            ok=sum(r["ok"] for r in reports),
            errors=sum(r["errors"] for r in reports),
            elapsed=seconds,
            latencies_ns=[us * 1000 for r in reports for us in r["latencies_us"]],
            statements=sum(r["statements"] for r in reports) if counted else None,
            error_kinds=kinds,
            late=sum(r["late"] for r in reports),
            statement_kinds=statement_kinds if counted else None,
            cpu_seconds=sum(r["cpu_s"] for r in reports),
        )

    def _send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message) + "\n"
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line)
            proc.stdin.flush()

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            wait_or_kill(proc, timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


class Backlog:
    """The case's database: a Telegram connection, its conversations, each round's replies
    (or, with ``hook_url``, each round's events to the chatbot's webhook there)."""

    def __init__(self, engine: Engine, hook_url: str | None = None) -> None:
        self.engine = engine
        self.hook_url = hook_url
        owner = make_owner(engine, tag="outbound")
        self.chatbot_id: UUID = owner.chatbot_id
        self.connection_id: UUID = uuid7()
        self.conversation_ids: list[UUID] = []
        self.unsettled = 0  # claims found still ``sending`` after a round
        with engine.begin() as conn:
            conn.execute(
                sa.insert(connections).values(
                    id=self.connection_id, chatbot_id=self.chatbot_id,
                    channel=Channel.TELEGRAM, external_id=BOT_TOKEN.split(":", 1)[0],
                    secret="bench", access_token=BOT_TOKEN, created_at=utcnow(),
                )
            )  # fmt: skip
            if hook_url is not None:
                conn.execute(
                    sa.update(chatbots)
                    .where(chatbots.c.id == self.chatbot_id)
                    .values(webhook_url=hook_url, webhook_secret="whsec_bench-secret")
                )

    def _ensure_conversations(self, count: int) -> None:
        have = len(self.conversation_ids)
        if count <= have:
            return
        now = utcnow()
        rows = [
            {
                "id": uuid7(), "chatbot_id": self.chatbot_id,
                "connection_id": self.connection_id, "psid": str(100_000 + i),
                "status": "OPEN", "slug": f"customer-{i}", "created_at": now,
                "last_message_at": now,
            }
            for i in range(have, count)
        ]  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(sa.insert(conversations), rows)
        self.conversation_ids += [r["id"] for r in rows]

    def reset(self) -> int:
        """Mark what a round left pending as failed; return how many were left *claimed*
        (``sending``): a dispatcher that stopped cleanly settles or gives back every claim,
        so any such row is a claim it lost track of."""
        now = utcnow()
        with self.engine.begin() as conn:
            claimed = conn.execute(
                sa.select(sa.func.count())
                .select_from(deliveries)
                .where(deliveries.c.status == DeliveryStatus.SENDING)
            ).scalar_one()
            conn.execute(
                sa.update(deliveries)
                .where(deliveries.c.status.in_(PENDING_DELIVERY))
                .values(
                    status=DeliveryStatus.FAILED, last_error=ROUND_OVER, claimed_by=None,
                    updated_at=now,
                )
            )  # fmt: skip
        return int(claimed)

    def pending(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(deliveries)
                .where(deliveries.c.status.in_(PENDING_DELIVERY))
            ).scalar_one()

    def queue(self, count: int) -> None:
        """One due reply in each of ``count`` conversations: the rows ``send_reply`` writes
        (or one event each, with the webhook delivery an inbound message's event has)."""
        self.unsettled += self.reset()
        self._ensure_conversations(count)
        if self.hook_url is not None:
            self._queue_events(count)
            return
        now = utcnow()
        message_rows, delivery_rows = [], []
        for i, conversation_id in enumerate(self.conversation_ids[:count]):
            message_id = uuid7()
            message_rows.append(
                {
                    "id": message_id, "conversation_id": conversation_id,
                    "connection_id": self.connection_id, "platform_message_id": None,
                    "direction": "out", "text": f"reply {message_id}", "sent_at": now,
                    "created_at": now,
                }
            )  # fmt: skip
            delivery_rows.append(
                {
                    "id": uuid7(), "message_id": message_id, "destination": Channel.TELEGRAM,
                    "conversation_id": conversation_id, "connection_id": self.connection_id,
                    "recipient": str(100_000 + i), "status": DeliveryStatus.QUEUED,
                    "attempts": 0, "next_attempt_at": now, "last_error": None,
                    "created_at": now, "updated_at": now,
                }
            )  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(sa.insert(messages), message_rows)
            conn.execute(sa.insert(deliveries), delivery_rows)
        self._analyze()

    def _queue_events(self, count: int) -> None:
        now = utcnow()
        stamp = now.isoformat().replace("+00:00", "Z")
        event_rows, delivery_rows = [], []
        for i, conversation_id in enumerate(self.conversation_ids[:count]):
            event_id, message_id = uuid7(), uuid7()
            message = {
                "id": str(message_id), "conversation_id": str(conversation_id),
                "connection_id": str(self.connection_id),
                "platform_message_id": f"m-{message_id.hex[:12]}", "direction": "in",
                "text": f"hello, is anyone there? ({i})", "sent_at": None, "created_at": stamp,
            }  # fmt: skip
            event_rows.append(
                {
                    "id": event_id, "seq": None, "chatbot_id": self.chatbot_id,
                    "conversation_id": conversation_id, "type": EventType.MESSAGE_CREATED,
                    "subject": str(message_id), "payload": {"message": message},
                    "created_at": now,
                }
            )  # fmt: skip
            delivery_rows.append(
                {
                    "id": uuid7(), "event_id": event_id, "destination": WEBHOOK_DESTINATION,
                    "conversation_id": conversation_id, "connection_id": None,
                    "recipient": None, "status": DeliveryStatus.QUEUED, "attempts": 0,
                    "next_attempt_at": now, "last_error": None, "created_at": now,
                    "updated_at": now,
                }
            )  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(sa.insert(events), event_rows)
            conn.execute(sa.insert(deliveries), delivery_rows)
        self._analyze()

    def _analyze(self) -> None:
        if self.engine.dialect.name == "postgresql":
            # The statistics a running server has: autovacuum analyzes a table once a
            # tenth of it changed, and a backlog written a moment ago is exactly that.
            # Without them the planner takes the fresh backlog for a few rows and picks
            # a plan that reads all of it on every claim.
            with self.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "ANALYZE deliveries"
                )

    def sent(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(deliveries)
                .where(deliveries.c.status == DeliveryStatus.SENT)
            ).scalar_one()

    def not_sent(self) -> int:
        """Deliveries a dispatcher settled as anything but sent (the bench's own reset of
        what a round left queued aside)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(deliveries)
                .where(
                    deliveries.c.status.not_in([DeliveryStatus.SENT, *PENDING_DELIVERY]),
                    sa.func.coalesce(deliveries.c.last_error, "") != ROUND_OVER,
                )
            ).scalar_one()


@contextmanager
def _build(
    env: Env, config: Config, dialect: str, count: int, destination: str = Channel.TELEGRAM
) -> Iterator[list[Contender]]:
    url = env.databases.noclash_db(dialect)
    engine = noclash_engine(url, 2)
    logs = env.databases.workdir
    concurrency = Settings().dispatcher_concurrency
    warmup, seconds = config.outbound_warmup, config.outbound_seconds
    ceiling = count * concurrency / PLATFORM_LATENCY  # sends per second the platform allows
    # What the dispatchers can hold claimed, in flight and ahead, when the window ends.
    claim_ahead = count * (1 + MAX_AHEAD) * concurrency
    # The fastest round of either contender (the limit's is an upper bound for noclash's)
    # and the longest round, warm-up and stop included.
    state: dict[str, Any] = {"fastest": 0.0, "longest": warmup + seconds, "starved": 0}

    def measured(started: float, result: RoundResult) -> None:
        state["fastest"] = max(state["fastest"], result.ok / seconds)
        state["longest"] = max(state["longest"], time.monotonic() - started)
    with ExitStack() as stack:
        try:
            tag = f"{dialect}-{count}-{destination}"
            platform: PlatformProcess = stack.enter_context(
                platform_server(PLATFORM_LATENCY, logs / f"botapi-{tag}.log")
            )
            hook_url = f"{platform.url}/hook" if destination == WEBHOOK_DESTINATION else None
            backlog = Backlog(engine, hook_url)
            fleet = Fleet(count, logs, tag)
            stack.callback(fleet.close)
            request = {"database_url": url, "api_url": platform.url, "token": BOT_TOKEN,
                       "hook_url": hook_url}  # fmt: skip

            def before_noclash(_phase: int) -> None:
                if state["fastest"]:
                    size = state["fastest"] * state["longest"] * BACKLOG_MARGIN
                else:  # nothing measured yet: what the platform would allow
                    size = ceiling * (warmup + seconds) * 1.2
                backlog.queue(math.ceil(size) + claim_ahead)

            def run_noclash(_w: int, _seconds: float, _max: int) -> RoundResult:
                started = time.monotonic()
                result = fleet.round({**request, "kind": "noclash"}, warmup, seconds)
                measured(started, result)
                if backlog.pending() == 0:
                    state["starved"] += 1
                return result

            def run_limit(_w: int, _seconds: float, _max: int) -> RoundResult:
                started = time.monotonic()
                result = fleet.round({**request, "kind": "limit"}, warmup, seconds)
                measured(started, result)
                return result

            def check() -> dict[str, int]:
                stats = platform.stats()
                received = int(stats["received"].get(RECEIVED_AS[destination], 0))
                backlog.unsettled += backlog.reset()
                return {
                    "dup_sends": int(stats["duplicates"]),
                    "unrecorded": received - backlog.sent(),
                    "unsettled": backlog.unsettled,
                    "not_sent": backlog.not_sent(),
                    "starved_rounds": state["starved"],
                }

            who = f"{count} dispatcher process{'es' if count > 1 else ''}"
            what = ("signed events to a webhook" if hook_url else "Telegram sendMessage")
            yield [
                Contender(
                    "noclash", "noclash", runner=run_noclash, before_round=before_noclash,
                    check=check, note=f"{who}, {what} at 20 ms",
                ),
                Contender(
                    "limit", "limit", runner=run_limit,
                    note=f"{who} of {concurrency} bare POSTs in flight, no database",
                ),
            ]  # fmt: skip
        finally:
            stack.close()
            engine.dispose()
            env.databases.drop(url)


def specs(env: Env, config: Config) -> list[CaseSpec]:
    return [
        CaseSpec(
            "outbound", dialect, count, label, CONTENDERS,
            partial(_build, env, config, dialect, count, destination),
        )
        for destination, label in LABELS.items()
        for dialect in env.dialects
        for count in config.dispatchers
    ]
