"""Connection bounds of ``noclash serve``: slow, idle and greedy clients are cut off.

Real processes and raw sockets: 1,000 connections that send their head one byte a second
or dribble their body, against ``noclash serve`` with small bounds set in its environment.
Each must be closed within its bound, the server's file descriptors (``/proc/<pid>/fd``)
must come back down, and a normal client must be served meanwhile, or told 503 when the
connection bound is reached, never left hanging.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.serve import Served, serving

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 3.0
BODY_IDLE = 2.0
BODY_TIMEOUT = 4.0
# What a close may take beyond its bound: the server's timer, a loaded 2-core machine, and
# this test's own once-a-second loop.
SLACK = 2.0

BOUNDS = {
    "NOCLASH_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "NOCLASH_BODY_IDLE_TIMEOUT_SECONDS": str(BODY_IDLE),
    "NOCLASH_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "NOCLASH_KEEP_ALIVE_TIMEOUT_SECONDS": "1",
}


@dataclass
class Slow:
    """One raw connection that sends ``payload`` one byte per tick after ``prefix``."""

    sock: socket.socket
    payload: bytes
    started: float
    sent: int = 0
    closed_at: float | None = None
    answer: bytearray = field(default_factory=bytearray)

    @property
    def status(self) -> int | None:
        line = bytes(self.answer).split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else None

    def problem(self) -> dict:
        return json.loads(bytes(self.answer).split(b"\r\n\r\n", 1)[1])


def _connect(served: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port))
    sock.setblocking(False)
    return sock


def _drive(slow: list[Slow], until: float, on_tick=None) -> None:
    """Send every open connection its next byte once a second; note when each is closed."""
    selector = selectors.DefaultSelector()
    for s in slow:
        selector.register(s.sock, selectors.EVENT_READ, s)
    next_tick = time.monotonic()
    ticks = 0
    while selector.get_map() and time.monotonic() < until:
        now = time.monotonic()
        if now >= next_tick:
            for s in slow:
                if s.closed_at is None and s.sent < len(s.payload):
                    try:
                        s.sock.send(s.payload[s.sent : s.sent + 1])
                        s.sent += 1
                    except OSError:
                        pass  # closed by the server: the read below notices
            ticks += 1
            if on_tick is not None:
                on_tick(ticks)
            next_tick = now + 1.0
        for key, _ in selector.select(timeout=max(0.0, min(0.2, next_tick - time.monotonic()))):
            s: Slow = key.data
            try:
                data = s.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                s.answer += data
                continue
            s.closed_at = time.monotonic()
            selector.unregister(s.sock)
            s.sock.close()
    selector.close()


def _wait_fds(served: Served, at_most: int, within: float) -> int:
    deadline = time.monotonic() + within
    while (fds := served.open_fds()) > at_most and time.monotonic() < deadline:
        time.sleep(0.1)
    return fds


def test_a_thousand_slow_clients_are_closed_and_a_normal_one_is_served(tmp_path: Path):
    env = BOUNDS | {"NOCLASH_MAX_CONNECTIONS": "1100"}
    with serving(f"sqlite:///{tmp_path / 'noclash.db'}", tmp_path, env=env) as served:
        token = served.token
        assert token is not None
        auth = {"Authorization": f"Bearer {token}"}
        time.sleep(0.5)
        baseline = served.open_fds()

        # 500 send their head one byte a second (it would take a minute to complete);
        # 500 send a whole head, then their body one byte a second (well within the idle
        # bound, but the whole body would take 100 s).
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
        body_head = (
            b"POST /api/chatbots HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + auth["Authorization"].encode() + b"\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        heads = [Slow(_connect(served), head, time.monotonic()) for _ in range(500)]
        bodies = []
        for _ in range(500):
            s = Slow(_connect(served), b'{"name": "' + b"x" * 88 + b'"}', time.monotonic())
            s.sock.sendall(body_head)
            bodies.append(s)

        peak: list[int] = []
        normal: list[tuple[int, int, float]] = []

        def meanwhile(tick: int) -> None:
            if tick == 2:
                peak.append(served.open_fds())
                started = time.monotonic()
                with httpx.Client(base_url=served.base_url, timeout=10) as c:
                    health = c.get("/healthz").status_code
                    made = c.post("/api/chatbots", json={"name": "normal"}, headers=auth)
                normal.append((health, made.status_code, time.monotonic() - started))

        _drive(heads + bodies, until=time.monotonic() + BODY_TIMEOUT + 3 * SLACK, on_tick=meanwhile)

        # Held at first: every slow connection had its descriptor.
        assert peak and peak[0] >= baseline + 950, (baseline, peak)
        # A normal client was served while they were.
        assert normal and normal[0][:2] == (200, 201), normal
        assert normal[0][2] < 5.0, normal
        # Each closed within its bound, with a 408 problem.
        for s in heads:
            assert s.closed_at is not None, "a slow head was never closed"
            assert s.closed_at - s.started <= HEADER_TIMEOUT + SLACK, s.closed_at - s.started
            assert s.status == 408 and s.problem()["type"].endswith("/request-timeout")
        for s in bodies:
            assert s.closed_at is not None, "a dribbled body was never closed"
            assert s.closed_at - s.started <= BODY_TIMEOUT + SLACK, s.closed_at - s.started
            assert s.status == 408 and "body" in s.problem()["detail"]
        # And the descriptors went back down.
        assert _wait_fds(served, baseline + 5, within=5) <= baseline + 5
        stderr = served.stderr()
    assert "Traceback" not in stderr
    assert stderr.count("408, closed") == 1000


def test_past_max_connections_a_client_gets_503_never_a_hang(tmp_path: Path):
    env = BOUNDS | {"NOCLASH_MAX_CONNECTIONS": "50"}
    with serving(f"sqlite:///{tmp_path / 'noclash.db'}", tmp_path, env=env) as served:
        time.sleep(0.5)
        baseline = served.open_fds()
        slow = [Slow(_connect(served), b"GET /healthz HTTP/1.1\r\n", time.monotonic())]
        slow += [Slow(_connect(served), b"GET /healthz HTTP/1.1\r\n", time.monotonic())
                 for _ in range(79)]  # fmt: skip
        answers: list[httpx.Response | Exception] = []

        def meanwhile(tick: int) -> None:
            if tick == 2:
                try:
                    answers.append(httpx.get(f"{served.base_url}/healthz", timeout=5))
                except httpx.HTTPError as exc:  # a hang would be a ReadTimeout
                    answers.append(exc)

        _drive(slow, until=time.monotonic() + HEADER_TIMEOUT + 2 * SLACK, on_tick=meanwhile)
        refused = [s for s in slow if s.status == 503]
        # 50 were let in (the accept loop may run ahead of a close by one or two); the rest
        # were answered at once.
        assert 25 <= len(refused) <= 32, len(refused)
        for s in refused:
            assert s.closed_at is not None and s.closed_at - s.started < 1.5
            assert s.problem()["type"].endswith("/unavailable")
        (answer,) = answers
        assert isinstance(answer, httpx.Response), answer
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.headers["content-type"] == "application/problem+json"
        # Once the slow ones are closed by their bound, a client is served again.
        assert all(s.closed_at is not None for s in slow)
        assert httpx.get(f"{served.base_url}/healthz", timeout=5).status_code == 200
        assert _wait_fds(served, baseline + 5, within=5) <= baseline + 5
        assert "refused a connection" in served.stderr()


def _raw(served: Served, request: bytes, *, wait: float = 5.0) -> tuple[bytes, float]:
    """Send ``request`` and read until the server closes; the answer and the time taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served.port), timeout=wait) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def test_heads_too_large_are_431_and_idle_connections_are_closed(tmp_path: Path):
    env = BOUNDS | {"NOCLASH_MAX_HEADERS": "20", "NOCLASH_MAX_HEADER_BYTES": "4096"}
    with serving(f"sqlite:///{tmp_path / 'noclash.db'}", tmp_path, env=env) as served:
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(30))
        answer, _ = _raw(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert b"headers-too-large" in answer and b"more than 20 fields" in answer

        # Too many bytes, arriving in one piece (h11 alone would accept it)...
        big = b"X-Big: " + b"a" * 5000 + b"\r\n"
        answer, _ = _raw(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 ") and b"exceeds 4096 bytes" in answer
        # ...or in the query string, which is part of the request line too.
        query = b"q=" + b"a" * 5000
        answer, _ = _raw(served, b"GET /healthz?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 431 ") and b"exceeds 4096 bytes" in answer
        # ...or still arriving (the head is refused before it is complete).
        answer, _ = _raw(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big)
        assert answer.startswith(b"HTTP/1.1 431 ") and b"exceeds 4096 bytes" in answer

        # A connection that sends nothing is closed quietly at the head deadline.
        answer, took = _raw(served, b"")
        assert answer == b"" and HEADER_TIMEOUT - 0.5 <= took <= HEADER_TIMEOUT + SLACK
        # A kept-alive connection is closed after the keep-alive timeout (1 s here).
        answer, took = _raw(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ") and 0.5 <= took <= 1 + SLACK
        # A client that waits for 100 Continue is not timed out for the wait, and its body,
        # sent promptly after, is read.
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/chatbots HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
            )
            assert sock.recv(100).startswith(b"HTTP/1.1 100 ")
            sock.sendall(b"{}")
            assert sock.recv(100).startswith(b"HTTP/1.1 401 ")  # no token: but it was read
        assert "Traceback" not in served.stderr()


def test_the_workers_get_the_same_bounds(tmp_path: Path):
    env = BOUNDS | {"NOCLASH_HEADER_TIMEOUT_SECONDS": "1", "NOCLASH_MAX_HEADERS": "20"}
    url = f"sqlite:///{tmp_path / 'noclash.db'}"
    with serving(url, tmp_path, "--workers", "2", env=env) as served:
        for _ in range(4):  # the kernel spreads connections over both workers
            answer, took = _raw(served, b"GET /healthz HTTP/1.1\r\n")
            assert answer.startswith(b"HTTP/1.1 408 ") and took <= 1 + SLACK
            many = b"".join(b"X-H%d: 1\r\n" % i for i in range(30))
            answer, _ = _raw(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
            assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_client_that_reads_nothing_is_cut_off_and_a_slow_reader_is_not(tmp_path: Path):
    env = BOUNDS | {"NOCLASH_SEND_TIMEOUT_SECONDS": "1"}
    with serving(f"sqlite:///{tmp_path / 'noclash.db'}", tmp_path, env=env) as served:
        auth = f"Bearer {served.token}"
        with httpx.Client(base_url=served.base_url, timeout=30) as c:
            bot = c.post("/api/chatbots", json={"name": "big"}, headers={"Authorization": auth})
            made = c.post(f"/api/widget/{bot.json()['public_token']}/sessions").json()
            path = f"/api/widget/{bot.json()['public_token']}/sessions/{made['session_id']}"
            for i in range(100):
                text = f"{i:04d}" + "m" * 3996
                assert c.post(f"{path}/messages", json={"text": text}).status_code == 201
        # About 400 kB a page. On loopback the kernel's buffers take a few MB (its segments
        # are 64 kB), so the client that reads nothing asks for 16 pages at once
        # (pipelined): over a real network a single page is already more than they take.
        request = (
            f"GET /api/conversations/{made['conversation_id']}/messages?limit=200 HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: {auth}\r\n\r\n"
        ).encode()
        time.sleep(0.5)
        baseline = served.open_fds()

        def small_window(pages: int, window: int = 4096) -> socket.socket:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
            sock.connect(("127.0.0.1", served.port))
            sock.sendall(request * pages)
            return sock

        idle = small_window(16)
        time.sleep(0.5)
        assert served.open_fds() >= baseline + 1
        # Aborted once it has taken nothing for the send timeout, though the client still
        # holds its end open (keep-alive's close() alone would have waited for it forever).
        assert _wait_fds(served, baseline, within=1 + 2 * SLACK) <= baseline
        idle.close()

        # A reader that takes 64 kB every 0.05 s of as many pages is slower than the server
        # writes, so output waits in its buffer for seconds; but the reader takes some of
        # it within every send timeout, and it gets it all.
        steady = small_window(16, window=64 * 1024)
        steady.settimeout(10)
        answer = bytearray()
        while answer.count(b'"next_cursor"') < 16:
            chunk = steady.recv(64 * 1024)
            assert chunk, "the slow reader was cut off"
            answer += chunk
            time.sleep(0.05)
        steady.close()
        assert answer.count(b"HTTP/1.1 200 ") == 16 and len(answer) > 6_000_000
        assert "took none of the" in served.stderr()
