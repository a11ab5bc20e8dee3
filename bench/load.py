"""``python -m bench.load``: a small HTTP/1.1 load generator for the http scenario.

Why not httpx: on a 2-core machine the load generator competes with the server for CPU,
and httpx spends far more of it per request than the server under test. This client is
raw asyncio streams over keep-alive connections: it writes one prepared request and reads
the status line, the headers and a Content-Length (or chunked) body, nothing more.

It runs in its own process (so the server's event loop and GIL are not shared with it),
is bounded in request count and in time, and prints one JSON object on stdout:
``ok`` (2xx), ``errors``, ``elapsed`` seconds, ``statuses`` and ``latencies_us``. With
``--serve`` it stays up and measures one round per JSON line on stdin, keeping its
connections open between rounds.

A body is sent as given, or, when it holds ``{n}`` or ``{g}``, made per request: ``{n}``
is the request's number in the round (warm-up included, so no two requests of a round
share it) and ``{g}`` that number divided by ``group`` (three messages per customer:
``{"psid": "c{g}", "message_id": "m{n}"}``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Stats:
    ok: int = 0
    errors: int = 0
    latencies_us: list[int] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, server closes the connection)."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("connection closed by the server")
    status = int(line.split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif key == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


def _head(host: str, port: int, path: str, length: int, token: str | None) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode()


class Requests:
    """The requests of a round: one prepared request, or one per number when the body is
    a template (see the module docstring)."""

    def __init__(self, url: str, body: bytes, token: str | None, group: int = 1) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._path, self._token, self._group = parts.path or "/", token, max(1, group)
        self._template = body.decode() if b"{n}" in body or b"{g}" in body else None
        self._fixed = _head(self.host, self.port, self._path, len(body), token) + body
        self._numbers = 0

    def next(self) -> bytes:
        if self._template is None:
            return self._fixed
        n = self._numbers
        self._numbers += 1
        body = self._template.replace("{n}", str(n)).replace("{g}", str(n // self._group))
        data = body.encode()
        return _head(self.host, self.port, self._path, len(data), self._token) + data


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Connections:
    """Keep-alive connections left open between rounds, per server.

    With ``--serve`` one process measures every round of a case, so a round after the
    first finds its connections open and needs no warm-up.
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[Conn]] = {}

    def idle(self, host: str, port: int) -> int:
        return len(self._idle.get((host, port), []))

    async def get(self, host: str, port: int) -> Conn:
        idle = self._idle.get((host, port))
        if idle:
            return idle.pop()
        return await asyncio.open_connection(host, port)

    def put(self, host: str, port: int, conn: Conn) -> None:
        self._idle.setdefault((host, port), []).append(conn)


async def _run(
    url: str, body: bytes, token: str | None, concurrency: int, seconds: float,
    max_requests: int, warmup: int, pool: Connections | None = None, group: int = 1,
) -> tuple[Stats, float]:
    requests = Requests(url, body, token, group)
    host, port = requests.host, requests.port
    pool = pool or Connections()
    stats = Stats()
    issued = 0
    deadline = 0.0

    async def client(measure: bool, budget: int) -> None:
        nonlocal issued
        reader, writer = await pool.get(host, port)
        try:
            while True:
                if measure and (issued >= budget or time.perf_counter() >= deadline):
                    break
                if not measure and issued >= budget:
                    break
                issued += 1
                t = time.perf_counter_ns()
                try:
                    writer.write(requests.next())
                    status, close = await asyncio.wait_for(_read_response(reader), 60)
                except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
                    if measure:
                        stats.errors += 1
                        stats.statuses["transport"] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                if measure:
                    stats.statuses[str(status)] += 1
                    if 200 <= status < 300:
                        stats.ok += 1
                        stats.latencies_us.append((time.perf_counter_ns() - t) // 1000)
                    else:
                        stats.errors += 1
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        except BaseException:
            writer.close()
            raise
        pool.put(host, port, (reader, writer))

    if pool.idle(host, port) < concurrency:
        # Warm-up: open connections, let the server fill its pool and caches.
        await asyncio.gather(*(client(False, warmup) for _ in range(concurrency)))
        issued = 0
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(client(True, max_requests) for _ in range(concurrency)))
    return stats, time.perf_counter() - start


def _report(stats: Stats, elapsed: float) -> str:
    return json.dumps(
        {
            "ok": stats.ok,
            "errors": stats.errors,
            "elapsed": elapsed,
            "statuses": dict(stats.statuses),
            "latencies_us": stats.latencies_us,
        }
    )


async def _serve(body: bytes) -> None:
    """One round per JSON line on stdin (url, token, concurrency, seconds, max_requests,
    warmup; optionally its own body and group), one report per line on stdout, until
    stdin closes."""
    pool = Connections()
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        r = json.loads(line)
        stats, elapsed = await asyncio.wait_for(
            _run(
                r["url"], r["body"].encode() if "body" in r else body, r.get("token"),
                r["concurrency"], r["seconds"], r["max_requests"],
                max(r["warmup"], r["concurrency"]), pool, r.get("group", 1),
            ),
            timeout=r["seconds"] + 120,
        )
        sys.stdout.write(_report(stats, elapsed) + "\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--body", default='{"name": "bench bot"}')
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--max-requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--serve", action="store_true", help="measure the rounds sent as JSON lines on stdin"
    )
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.body.encode()))
        return 0
    if not args.url:
        parser.error("--url is required without --serve")
    stats, elapsed = asyncio.run(
        asyncio.wait_for(
            _run(
                args.url, args.body.encode(), args.token, args.concurrency, args.seconds,
                args.max_requests, max(args.warmup, args.concurrency),
            ),
            timeout=args.seconds + 120,
        )
    )
    sys.stdout.write(_report(stats, elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
