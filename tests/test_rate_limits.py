"""Abuse limits: sessions and messages per address and per chatbot, failed bearer tokens.

The counters live in the database, so the tests run real ``noclash serve`` processes on
real SQLite and PostgreSQL databases, clients from distinct loopback addresses (Linux
routes all of 127.0.0.0/8 to the loopback interface, so a client bound to 127.0.0.2 is a
different peer), and two processes on one database to show the state is shared.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from noclash.api.app import create_app
from noclash.api.ratelimit import LIMITED_ROUTES, FixedWindowCounter, Limit, client_address
from noclash.config import Settings
from noclash.db.tables import rate_limits
from tests.support.serve import Served, serving

PROBLEM = "application/problem+json"
RATE_LIMITED = "https://noclash.dev/problems/rate-limited"
WINDOW = 60
# A clock 20 s into a window, so every refusal says Retry-After: 40.
T0 = WINDOW * 29_000_000 + 20.0

OFF = {
    "NOCLASH_RATE_LIMIT_SESSIONS_PER_ADDRESS": "0",
    "NOCLASH_RATE_LIMIT_SESSIONS_PER_CHATBOT": "0",
    "NOCLASH_RATE_LIMIT_MESSAGES_PER_ADDRESS": "0",
    "NOCLASH_RATE_LIMIT_MESSAGES_PER_CHATBOT": "0",
    "NOCLASH_RATE_LIMIT_AUTH_FAILURES_PER_ADDRESS": "0",
}


def _in_one_window(room: float = 15.0) -> None:
    """Wait, if need be, until at least ``room`` seconds are left in the current window.
    Windows are aligned to the epoch, so a test whose requests straddled the start of a
    new one would see its counts start again from zero halfway."""
    left = WINDOW - time.time() % WINDOW
    if left < room:
        time.sleep(left + 0.05)


def _client(served: Served, address: str = "127.0.0.1", **kwargs: object) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=served.base_url, transport=transport, timeout=30, **kwargs)


def _assert_rate_limited(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == RATE_LIMITED and body["status"] == 429
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW
    return retry_after


def _chatbot(served: Served, token: str) -> dict:
    with _client(served, headers={"Authorization": f"Bearer {token}"}) as c:
        made = c.post("/api/chatbots", json={"name": "limited"})
    assert made.status_code == 201, made.text
    return made.json()


# -- the counter ------------------------------------------------------------------------------
def test_concurrent_hits_each_get_their_own_count(engine):
    """24 threads at a barrier hit one bucket with room for 10: exactly 10 pass, whatever
    the interleaving, because the database serialises the upserts of one row."""
    counter = FixedWindowCounter(engine, WINDOW, clock=lambda: T0)
    n, limit = 24, 10
    barrier = threading.Barrier(n)

    def hit(_: int):
        barrier.wait()
        return counter.hit([Limit("t/address/192.0.2.1", limit, "tests")])

    with ThreadPoolExecutor(n) as pool:
        verdicts = list(pool.map(hit, range(n)))
    assert sum(v.allowed for v in verdicts) == limit
    assert {v.retry_after for v in verdicts if not v.allowed} == {40}
    with engine.connect() as conn:
        assert conn.execute(sa.select(rate_limits.c.hits)).scalars().all() == [n]


def test_a_refused_address_does_not_spend_the_chatbot_budget(engine):
    counter = FixedWindowCounter(engine, WINDOW, clock=lambda: T0)
    limits = [Limit("s/address/a", 2, "a"), Limit("s/chatbot/c", 100, "c")]
    verdicts = [counter.hit(limits) for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, False, False, False]
    assert verdicts[-1].refused_by == limits[0]
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.select(rate_limits.c.bucket, rate_limits.c.hits)).all())
    assert rows == {"s/address/a": 5, "s/chatbot/c": 2}


def test_old_windows_are_purged_and_a_new_window_starts_afresh(engine):
    now = [T0]
    counter = FixedWindowCounter(engine, WINDOW, clock=lambda: now[0])
    limit = [Limit("p/address/a", 1, "p")]
    assert counter.hit(limit).allowed and not counter.hit(limit).allowed
    now[0] += WINDOW  # the next window: this hit purges the one before
    assert counter.hit(limit).allowed
    with engine.connect() as conn:
        rows = conn.execute(sa.select(rate_limits.c.window_start, rate_limits.c.hits)).all()
    assert len(rows) == 1 and rows[0].hits == 1
    assert rows[0].window_start.timestamp() == T0 - 20 + WINDOW


def test_client_addresses_are_counted_per_ipv4_address_and_ipv6_64():
    def key(host: str | None) -> str | None:
        return client_address({"client": (host, 1234) if host else None})

    assert key("203.0.113.9") == "203.0.113.9"
    assert key("2001:db8:1:2:aaaa::1") == key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("::ffff:203.0.113.9") == "203.0.113.9"
    assert key(None) is None


def test_the_limited_routes_exist(tmp_path: Path):
    paths = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")).openapi()["paths"]
    for template in LIMITED_ROUTES:
        assert "post" in paths[template], template


def test_a_malformed_trusted_proxy_is_refused_at_startup():
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(trusted_proxies="10.0.0.1,proxy.internal")
    assert Settings(trusted_proxies="10.0.0.0/8, ::1, *").trusted_proxies


# -- through the HTTP API ---------------------------------------------------------------------
def test_sessions_and_messages_are_limited_per_address(database_url: str, tmp_path: Path):
    env = OFF | {
        "NOCLASH_RATE_LIMIT_SESSIONS_PER_ADDRESS": "3",
        "NOCLASH_RATE_LIMIT_MESSAGES_PER_ADDRESS": "4",
    }
    with serving(database_url, tmp_path, env=env) as served:
        assert served.token is not None
        bot = _chatbot(served, served.token)
        sessions = f"/api/widget/{bot['public_token']}/sessions"
        _in_one_window()
        with _client(served) as first, _client(served, "127.0.0.2") as second:
            assert [first.post(sessions).status_code for _ in range(3)] == [201] * 3
            retry_after = _assert_rate_limited(first.post(sessions))
            body = first.post(sessions).json()
            assert "sessions from this address" in body["detail"]
            assert f"retry in {retry_after} s" in body["detail"] or retry_after > 1
            # Another address is not limited.
            assert second.post(sessions).status_code == 201

            # The proxy on 127.0.0.1 is trusted (the default): its X-Forwarded-For names the
            # client, who is another address with its own budget.
            proxied = first.post(sessions, headers={"X-Forwarded-For": "203.0.113.7"})
            assert proxied.status_code == 201
            # 127.0.0.2 is no trusted proxy: its X-Forwarded-For is ignored, so inventing a
            # new one per request does not buy a new budget.
            spoofed = [
                second.post(sessions, headers={"X-Forwarded-For": f"198.51.100.{i}"})
                for i in range(4)
            ]
            assert [r.status_code for r in spoofed[:2]] == [201, 201]
            for r in spoofed[2:]:
                _assert_rate_limited(r)

        with _client(served, "127.0.0.3") as third:
            session = third.post(sessions).json()["session_id"]
            messages = f"{sessions}/{session}/messages"
            codes = [third.post(messages, json={"text": f"m{i}"}).status_code for i in range(4)]
            assert codes == [201] * 4
            _assert_rate_limited(third.post(messages, json={"text": "one too many"}))

    from noclash.db.engine import create_engine

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM sessions")).scalar_one()
            texts = conn.execute(sa.text("SELECT text FROM messages")).scalars().all()
            buckets = set(conn.execute(sa.select(rate_limits.c.bucket)).scalars())
    finally:
        engine.dispose()
    # 3 + 1 + 1 + 2 + 1 sessions were allowed; nothing refused was stored.
    assert stored == 8
    assert sorted(texts) == ["m0", "m1", "m2", "m3"]
    assert {
        "sessions/address/127.0.0.1",
        "sessions/address/127.0.0.2",
        "sessions/address/203.0.113.7",
        "messages/address/127.0.0.3",
    } <= buckets
    assert not any("198.51.100" in b for b in buckets)


def test_the_chatbot_limit_holds_across_two_processes(database_url: str, tmp_path: Path):
    """Two servers on one database share the chatbot's budget: a per-process counter would
    let each of them allow the limit."""
    env = OFF | {"NOCLASH_RATE_LIMIT_SESSIONS_PER_CHATBOT": "5"}
    with (
        serving(database_url, tmp_path / "a", env=env) as a,
        serving(database_url, tmp_path / "b", env=env) as b,
    ):
        token = a.token or b.token
        assert token is not None and (a.token is None or b.token is None)
        bot = _chatbot(a, token)
        public = bot["public_token"]
        # Alternating between the processes, from a new address each time, and spelling
        # the token three ways (the same chatbot, the same bucket).
        spellings = [public, public.upper(), public.replace("-", "")]
        codes = []
        _in_one_window()
        for i in range(12):
            served = (a, b)[i % 2]
            with _client(served, f"127.0.1.{i + 1}") as c:
                response = c.post(f"/api/widget/{spellings[i % 3]}/sessions")
            codes.append(response.status_code)
            if response.status_code == 429:
                assert "sessions on this chatbot" in response.json()["detail"]
                _assert_rate_limited(response)
        assert codes == [201] * 5 + [429] * 7, codes

        # The same held at a barrier: 16 clients on both processes race for 5 places.
        other = _chatbot(b, token)["public_token"]
        n = 16
        barrier = threading.Barrier(n)

        def race(i: int) -> int:
            with _client((a, b)[i % 2], f"127.0.2.{i + 1}") as c:
                barrier.wait()
                return c.post(f"/api/widget/{other}/sessions").status_code

        with ThreadPoolExecutor(n) as pool:
            raced = list(pool.map(race, range(n)))
        assert sorted(raced) == [201] * 5 + [429] * 11, raced


def test_wrong_tokens_are_refused_a_correct_one_never(database_url: str, tmp_path: Path):
    env = OFF | {
        "NOCLASH_RATE_LIMIT_AUTH_FAILURES_PER_ADDRESS": "3",
        # Every correct token is verified against the database, not a process's memory.
        "NOCLASH_AUTH_CACHE_SECONDS": "0",
    }
    with (
        serving(database_url, tmp_path / "a", env=env) as a,
        serving(database_url, tmp_path / "b", env=env) as b,
    ):
        token = a.token or b.token
        assert token is not None
        wrong = {"Authorization": "Bearer nc_00000000000000000000000000000000"}
        right = {"Authorization": f"Bearer {token}"}
        answers, correct, latencies = [], [], []
        _in_one_window()
        for i in range(8):
            served = (a, b)[i % 2]  # failures on one process count on the other
            with _client(served) as c:
                answers.append(c.get("/api/chatbots", headers=wrong))
                started = time.monotonic()
                correct.append(c.get("/api/chatbots", headers=right).status_code)
                latencies.append(time.monotonic() - started)
        assert [r.status_code for r in answers] == [401] * 3 + [429] * 5
        for r in answers[3:]:
            _assert_rate_limited(r)
            assert "failed bearer tokens" in r.json()["detail"]
        # The correct token is served every time, before and after the address was over
        # its limit, and as fast (no delay was added to it).
        assert correct == [200] * 8
        assert max(latencies) < 2.0, latencies
        # A wrong token from another address is an ordinary 401.
        with _client(a, "127.0.0.2") as c:
            assert c.get("/api/chatbots", headers=wrong).status_code == 401
        # A widget session with a correct token is not affected either.
        bot = _chatbot(a, token)
        with _client(a) as c:
            started = c.post(f"/api/widget/{bot['public_token']}/sessions", headers=right)
        assert started.status_code == 201


def test_every_limit_and_bound_is_documented():
    root = Path(__file__).parents[1]
    configuration = (root / "docs" / "configuration.md").read_text()
    deployment = (root / "docs" / "deployment.md").read_text()
    names = [
        name
        for name in Settings.model_fields
        if name.startswith(("rate_limit_", "max_header", "max_connections", "trusted_"))
        or name.endswith("timeout_seconds")
    ]
    assert len(names) >= 15, names
    for name in names:
        assert f"`NOCLASH_{name.upper()}`" in configuration, name
        assert f"NOCLASH_{name.upper()}" in deployment, name
    api = (root / "docs" / "api.md").read_text()
    for kind in ("rate-limited", "request-timeout", "headers-too-large"):
        assert f"`{kind}`" in api, kind


def test_an_unreachable_counter_lets_the_route_answer(tmp_path: Path):
    """With the database locked the limiter cannot count: the request goes on, and the
    route answers the database's 503 itself (a limiter error would have been a 500)."""
    import sqlite3

    db = tmp_path / "noclash.db"
    env = OFF | {
        "NOCLASH_RATE_LIMIT_SESSIONS_PER_ADDRESS": "5",
        "NOCLASH_SQLITE_BUSY_TIMEOUT_MS": "200",
    }
    with serving(f"sqlite:///{db}", tmp_path, env=env) as served:
        assert served.token is not None
        bot = _chatbot(served, served.token)
        url = f"/api/widget/{bot['public_token']}/sessions"
        locker = sqlite3.connect(db, isolation_level=None, timeout=5)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            with _client(served) as c:
                locked = c.post(url)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert locked.status_code == 503, locked.text
        assert locked.headers["content-type"] == PROBLEM
        with _client(served) as c:
            assert c.post(url).status_code == 201
        stderr = served.stderr()
    assert "rate limits not counted" in stderr
    assert "Traceback" not in stderr
