"""Scenarios ``stream`` and ``events``: how fast live streams are, what events cost.

**stream** (latency). Messages are posted at a steady 100 per second through
``POST /api/connections/{id}/inbound`` of one noclash server process while a stream
client reads ``GET /api/stream`` from another (PostgreSQL: two ``bench.serve`` processes,
so the event crosses processes by NOTIFY; SQLite, one process: the same server). A
message's latency runs from the moment its POST is sent to the moment its
``message.created`` event is read off the stream: an upper bound of "stored → received",
since it includes the store itself. ``ops/s`` is the events received per second; p50 and
p99 are the latencies. Target: p99 < 250 ms.

**events** (throughput). 32 writers store inbound messages through
:func:`noclash.chat.inbound.receive_message` in this process, each message new (three per
customer), as fast as they can:

- ``noclash``: as the API does it, events written in each message's transaction and,
  after its commit, the process's :class:`~noclash.chat.wakeups.Hub` told (local wake-ups,
  and on PostgreSQL the coalesced NOTIFY, heard by a listening hub as a stream's process
  would be);
- ``no NOTIFY``: events written, the hub not told (what NOTIFY itself costs);
- ``no events``: the same build with events off for its engine
  (:data:`noclash.chat.events.EVENTS_OPTION`), no hub.

**events over HTTP** (throughput, as a platform sees it). 32 keep-alive connections of one
load-generating process (:mod:`bench.load`) post inbound messages, each new, three per
customer, to ``POST /api/connections/{id}/inbound`` of a noclash server process
(:mod:`bench.serve`, the real app):

- ``noclash``: the app as it runs (events, the hub told after each commit; on PostgreSQL
  the coalesced NOTIFY, heard by a listening hub in the bench's process);
- ``no events``: the same build and app, started with ``--no-events``
  (:data:`noclash.chat.events.EVENTS_OPTION` off for its engine), on a database of its own.

Target: noclash >= 0.85x ``no events``, in each case. They print their figures side by
side in one run; nothing here is a test assertion.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.databases import noclash_engine
from bench.harness import CaseSpec, Config, Contender, RoundResult
from bench.scenarios import Env, make_owner
from bench.scenarios.http import LoadGenerator, server
from noclash.chat import events
from noclash.chat.inbound import receive_message
from noclash.chat.users import create_user
from noclash.chat.wakeups import Hub

STREAM_CONTENDERS = ("noclash",)
EVENTS_CONTENDERS = ("noclash", "no NOTIFY", "no events")
HTTP_CONTENDERS = ("noclash", "no events")
# The inbound body of the HTTP case: a new message each, three per customer (bench.load).
INBOUND_BODY = '{"psid": "%s-c{g}", "message_id": "%s-m{n}", "text": "hello, is anyone there?"}'
RATE = 100.0  # messages per second in the stream scenario
MESSAGES_PER_CUSTOMER = 3
# The longest a message's event may take before the round counts it as lost.
LOST_AFTER = 10.0


# -- stream latency ---------------------------------------------------------------------------


class StreamClient:
    """``GET /api/stream`` read in a thread: when each message's event arrived, by the
    message's platform id. A small parser of the SSE wire format (``data:`` lines)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.arrived: dict[str, float] = {}
        self._changed = threading.Condition()
        self._client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30, read=None),
        )
        self._opened = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._opened.wait(30):
            raise RuntimeError("the stream did not open")

    def _run(self) -> None:
        with contextlib.suppress(httpx.HTTPError, OSError), self._client.stream(
            "GET", "/api/stream"
        ) as response:
            self._response = response
            self._opened.set()
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                now = time.perf_counter()
                envelope = json.loads(line[5:])
                message = envelope["data"].get("message")
                if envelope["type"] == "message.created" and message:
                    with self._changed:
                        self.arrived[message["platform_message_id"]] = now
                        self._changed.notify_all()
        self._opened.set()

    def wait_for(self, keys: list[str], timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        with self._changed:
            while any(k not in self.arrived for k in keys):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return
                self._changed.wait(min(remaining, 0.1))

    def close(self) -> None:
        if self._response is not None:
            network = self._response.extensions.get("network_stream")
            sock = network.get_extra_info("socket") if network is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self._client.close()


class Poster:
    """Posts inbound messages at a fixed rate from a small pool of threads; remembers
    when each POST was sent."""

    def __init__(self, base_url: str, token: str, connection_id: str, threads: int = 8) -> None:
        self.base_url, self.token, self.path = base_url, token, (
            f"/api/connections/{connection_id}/inbound"
        )
        self.sent: dict[str, float] = {}
        self.failed = 0
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads)

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"},
                timeout=30,
            )  # fmt: skip
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _post(self, key: str, psid: str) -> None:
        client = self._client()
        self.sent[key] = time.perf_counter()
        try:
            answer = client.post(self.path, json={"psid": psid, "message_id": key, "text": key})
            if answer.status_code != 201:
                self.failed += 1
        except httpx.HTTPError:
            self.failed += 1

    def paced(self, keys: list[tuple[str, str]], rate: float) -> None:
        """Post every ``(message id, psid)`` of ``keys``, the i-th at ``i / rate`` s."""
        start = time.perf_counter()
        futures = []
        for i, (key, psid) in enumerate(keys):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(self._pool.submit(self._post, key, psid))
        for future in futures:
            future.result()

    def close(self) -> None:
        self._pool.shutdown()
        for client in self._clients:
            client.close()


def _stream_round(
    poster: Poster, reader: StreamClient, tickets: Iterator[int], seconds: float
) -> RoundResult:
    count = max(1, round(RATE * seconds))
    keys = []
    for _ in range(count):
        t = next(tickets)
        keys.append((f"m{t}", f"c{t // MESSAGES_PER_CUSTOMER}"))
    started = time.perf_counter()
    failed_before = poster.failed
    poster.paced(keys, RATE)
    reader.wait_for([k for k, _ in keys], LOST_AFTER)
    elapsed = time.perf_counter() - started
    latencies = [
        int((reader.arrived[k] - poster.sent[k]) * 1e9) for k, _ in keys if k in reader.arrived
    ]
    missing = sum(1 for k, _ in keys if k not in reader.arrived)
    failed = poster.failed - failed_before
    kinds = {"lost": missing} if missing else {}
    if failed:
        kinds["POST failed"] = failed
    return RoundResult(
        ok=len(latencies), errors=missing, elapsed=elapsed, latencies_ns=latencies,
        error_kinds=Counter(kinds),
    )  # fmt: skip


@contextmanager
def _build_stream(env: Env, config: Config, dialect: str) -> Iterator[list[Contender]]:
    url = env.databases.noclash_db(dialect)
    engine = noclash_engine(url, 2)
    try:
        _user, token = create_user(engine, f"bench-{time.monotonic_ns()}@example.com")
    finally:
        engine.dispose()
    logs: Path = env.databases.workdir
    with ExitStack() as stack:
        try:
            reading = stack.enter_context(
                server("noclash", url, logs / f"stream-read-{dialect}.log")
            )
            # SQLite is one process (a second one would see the first's events only at
            # its periodic re-read); PostgreSQL crosses processes.
            writing = reading
            if dialect != "sqlite":
                writing = stack.enter_context(
                    server("noclash", url, logs / f"stream-write-{dialect}.log")
                )
            with httpx.Client(base_url=writing, headers={"Authorization": f"Bearer {token}"}) as c:
                bot = c.post("/api/chatbots", json={"name": "stream bench"}).json()
                connection = c.post(
                    f"/api/chatbots/{bot['id']}/connections",
                    json={"channel": "custom", "external_id": "sms"},
                ).json()
            reader = StreamClient(reading, token)
            stack.callback(reader.close)
            poster = Poster(writing, token, connection["id"])
            stack.callback(poster.close)
            tickets = itertools.count()
            seconds = max(config.seconds, 1.0) if not config.quick else config.seconds
            where = "another process" if writing != reading else "the same process"

            def runner(_writers: int, _seconds: float, _max_ops: int) -> RoundResult:
                return _stream_round(poster, reader, tickets, seconds)

            yield [
                Contender(
                    "noclash", "noclash", runner=runner,
                    note=f"{RATE:g} messages/s posted, read off a stream on {where}: "
                    "latency from the POST sent to the event read",
                )
            ]  # fmt: skip
        finally:
            stack.close()
            env.databases.drop(url)


# -- events throughput ------------------------------------------------------------------------


class _Listening:
    """A hub listening as a streaming process's would (a subscriber on its own event loop,
    in a thread), so NOTIFY has someone to reach."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        with self.hub.subscribe(None):
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self.hub.close()


class _Tickets:
    """The messages of one contender: each new, three per customer, fresh every round."""

    def __init__(self) -> None:
        self.restart(0)

    def restart(self, round_: int) -> None:
        self.round, self._count = round_, itertools.count()

    def next(self) -> tuple[str, str]:
        t = next(self._count)
        return f"r{self.round}-c{t // MESSAGES_PER_CUSTOMER}", f"r{self.round}-m{t}"


def _inbound_op(engine: Any, connection_id: Any, hub: Hub | None, tickets: _Tickets) -> Callable:
    def op(_w: int, _seq: int) -> None:
        psid, mid = tickets.next()
        with events.collecting() as recorded:
            receive_message(
                engine, connection_id=connection_id, psid=psid, platform_message_id=mid,
                text="hello, is anyone there?",
            )  # fmt: skip
        if hub is not None and recorded:
            hub.committed(recorded)

    return op


@contextmanager
def _build_events(env: Env, dialect: str, writers: int) -> Iterator[list[Contender]]:
    urls = [env.databases.noclash_db(dialect) for _ in EVENTS_CONTENDERS]
    engines = [noclash_engine(url, writers) for url in urls]
    hub = Hub(engines[0])
    listening = _Listening(Hub(engines[0])) if hub.across_processes else None
    plain = engines[2].execution_options(**{events.EVENTS_OPTION: False})
    owners = [make_owner(e, tag=n) for e, n in zip(engines, EVENTS_CONTENDERS, strict=True)]
    tickets = [_Tickets() for _ in EVENTS_CONTENDERS]
    ops = [
        ("noclash", "noclash", _inbound_op(engines[0], owners[0].connection_id, hub, tickets[0])),
        ("no NOTIFY", "variant",
         _inbound_op(engines[1], owners[1].connection_id, None, tickets[1])),
        ("no events", "limit", _inbound_op(plain, owners[2].connection_id, None, tickets[2])),
    ]  # fmt: skip
    notes = {
        "noclash": "events + the hub told after each commit"
        + (" (coalesced NOTIFY, a listener elsewhere)" if hub.across_processes else ""),
        "no NOTIFY": "events written, the hub not told",
        "no events": "EVENTS_OPTION off for the engine",
    }
    try:
        yield [
            Contender(name, role, op, engines=[engines[i]], note=notes[name],
                      before_round=lambda r, t=tickets[i]: t.restart(r))
            for i, (name, role, op) in enumerate(ops)
        ]  # fmt: skip
    finally:
        if listening is not None:
            listening.close()
        hub.close()
        for engine in engines:
            engine.dispose()
        for url in urls:
            env.databases.drop(url)


@contextmanager
def _build_events_http(
    env: Env, config: Config, dialect: str, writers: int
) -> Iterator[list[Contender]]:
    urls = [env.databases.noclash_db(dialect) for _ in HTTP_CONTENDERS]
    logs: Path = env.databases.workdir
    budget = min(config.max_ops, config.http_max_requests)
    warmup = max(config.warmup_ops, writers * 2)
    with ExitStack() as stack:
        try:
            bases: list[tuple[str, str, str]] = []  # (server URL, token, inbound path)
            for name, url in zip(HTTP_CONTENDERS, urls, strict=True):
                engine = noclash_engine(url, 2)
                try:
                    _user, token = create_user(engine, f"bench-{time.monotonic_ns()}@example.com")
                finally:
                    engine.dispose()
                tag = name.replace(" ", "-")
                base = stack.enter_context(
                    server("noclash", url, logs / f"events-http-{tag}-{dialect}.log",
                           events=name != "no events")
                )  # fmt: skip
                with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
                    bot = c.post("/api/chatbots", json={"name": f"events bench {tag}"}).json()
                    connection = c.post(
                        f"/api/chatbots/{bot['id']}/connections",
                        json={"channel": "custom", "external_id": "sms"},
                    ).json()
                bases.append((base, token, f"/api/connections/{connection['id']}/inbound"))
            listening_engine = noclash_engine(urls[0], 2)
            stack.callback(listening_engine.dispose)
            hub = Hub(listening_engine)
            if hub.across_processes:  # NOTIFY has someone to reach, as in a deployment
                stack.callback(_Listening(hub).close)
            generator = LoadGenerator(logs / f"events-http-load-{dialect}.log")
            stack.callback(generator.close)
            rounds = itertools.count()
            # A few hundred requests a second: a round of the usual 0.3 s would hold too few
            # for a steady figure (as in the stream case).
            window = config.seconds if config.quick else max(config.seconds, 1.0)

            def runner(i: int, w: int, _seconds: float, _max: int) -> RoundResult:
                base, token, path = bases[i]
                prefix = f"r{next(rounds)}"
                body = INBOUND_BODY % (prefix, prefix)
                return generator.round(base, token, w, window, budget, warmup, path=path,
                                       body=body, group=MESSAGES_PER_CUSTOMER)  # fmt: skip

            notes = {
                "noclash": "POST .../inbound of the real app, events on"
                + (" (coalesced NOTIFY, a listener elsewhere)" if hub.across_processes else ""),
                "no events": "the same app started with events off",
            }
            yield [
                Contender(name, role, runner=partial(runner, i), note=notes[name])
                for i, (name, role) in enumerate(zip(HTTP_CONTENDERS, ("noclash", "limit"),
                                                     strict=True))
            ]  # fmt: skip
        finally:
            stack.close()
            for url in urls:
                env.databases.drop(url)


def stream_specs(env: Env, config: Config) -> list[CaseSpec]:
    return [
        CaseSpec(
            "stream", dialect, 1, f"{RATE:g} msg/s, latency", STREAM_CONTENDERS,
            partial(_build_stream, env, config, dialect),
        )
        for dialect in env.dialects
    ]


def specs(env: Env, config: Config) -> list[CaseSpec]:
    writers = 8 if config.quick else 32
    return [
        spec
        for dialect in env.dialects
        for spec in (
            CaseSpec(
                "events", dialect, writers, "inbound, events on/off", EVENTS_CONTENDERS,
                partial(_build_events, env, dialect, writers),
            ),
            CaseSpec(
                "events", dialect, writers, "inbound over HTTP, events on/off",
                HTTP_CONTENDERS, partial(_build_events_http, env, config, dialect, writers),
            ),
        )
    ]

