"""A security review from outside, against running servers: what the docs promise holds.

- ``allowed_origins: []`` lets no site's page use the widget. The list is "the sites whose
  pages may" (docs/pages.md): an owner who empties it takes the widget off every site. It
  was read as "any origin", like null, so emptying the list opened the widget to every
  page, and the answer still showed ``[]``.
- ``NOCLASH_TRUSTED_PROXIES=*``: the rate limits count the client the proxy names (the
  rightmost ``X-Forwarded-For`` entry), never an entry the client wrote itself. uvicorn
  takes the leftmost entry when every peer is trusted, so a client behind the proxy that
  wrote a new ``X-Forwarded-For`` per request got a new budget per request (for widget
  sessions and messages, and for wrong bearer tokens).
- A webhook host whose DNS server never answers holds a resolver thread for seconds: an
  owner naming such hosts many times at once delays other webhook lookups, never the
  rest of the API. Lookups ran on the worker threads every request's database work takes
  (40), so 40 of them stalled every request of the process until they timed out, and a
  flood of them grew threads without bound.
- A webhook is never followed through a redirect (a public bot answering ``307`` to an
  address inside noclash's network), by the sender or by the ping route; and the address
  rule refuses the spellings of a loopback address that the rest of the suite does not
  try (octal, short, IPv6 forms, a zone id).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from noclash.channels import webhooks
from noclash.channels.sending import Outcome, SendResult
from noclash.db.engine import create_engine
from noclash.db.tables import sessions
from tests.support.bots import LoopbackBot
from tests.support.platforms import LoopbackPlatform, running
from tests.support.serve import Served, serving
from tests.support.server import start_live_server

# What these tests check does not depend on the database engine (parsing, addresses,
# HTTP, the pages' rules): they run on SQLite alone, to keep the suite within its time.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PROBLEM = "application/problem+json"
ORIGIN_NOT_ALLOWED = "https://noclash.dev/problems/origin-not-allowed"
RATE_LIMITED = "https://noclash.dev/problems/rate-limited"


# -- allowed_origins: [] ----------------------------------------------------------------------


def _sessions(live) -> int:
    with live.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sessions)).scalar_one()


def _from(live, origin: str) -> httpx.Client:
    """A page of ``origin`` calling the widget API (no token: a visitor)."""
    client = live.client()
    client.headers["Origin"] = origin
    return client


@SQLITE_ONLY
def test_an_empty_origin_list_lets_no_site_use_the_widget(live_server):
    owner = live_server.client(live_server.user())
    bot = owner.post("/api/chatbots", json={"name": "closed", "allowed_origins": []}).json()
    assert bot["allowed_origins"] == []
    token = bot["public_token"]
    page = _from(live_server, "https://shop.example")
    before = _sessions(live_server)

    shown = page.get(f"/api/public/chatbots/{token}")
    started = page.post(f"/api/widget/{token}/sessions")
    preflight = page.options(
        f"/api/widget/{token}/sessions", headers={"Access-Control-Request-Method": "POST"}
    )
    for answer in (shown, started, preflight):
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["type"] == ORIGIN_NOT_ALLOWED
    assert "closed" not in shown.text  # the chatbot's name is not read by that page
    assert _sessions(live_server) == before  # and nothing was written for it

    # Not a cross-origin request (a server, curl): not affected, as with any list.
    assert live_server.client().get(f"/api/public/chatbots/{token}").status_code == 200
    # A list with the site lets it in; null (cleared) lets every site in again.
    owner.patch(f"/api/chatbots/{bot['id']}", json={"allowed_origins": ["https://shop.example"]})
    assert page.get(f"/api/public/chatbots/{token}").status_code == 200
    other = _from(live_server, "https://other.example")
    assert other.get(f"/api/public/chatbots/{token}").status_code == 403
    cleared = owner.patch(f"/api/chatbots/{bot['id']}", json={"allowed_origins": None})
    assert cleared.json()["allowed_origins"] is None
    answer = other.get(f"/api/public/chatbots/{token}")
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://other.example"
    # Emptying the list again closes it again, on the same chatbot.
    owner.patch(f"/api/chatbots/{bot['id']}", json={"allowed_origins": []})
    assert other.post(f"/api/widget/{token}/sessions").status_code == 403


# -- NOCLASH_TRUSTED_PROXIES=* ----------------------------------------------------------------

OFF = {
    "NOCLASH_RATE_LIMIT_SESSIONS_PER_ADDRESS": "0",
    "NOCLASH_RATE_LIMIT_SESSIONS_PER_CHATBOT": "0",
    "NOCLASH_RATE_LIMIT_MESSAGES_PER_ADDRESS": "0",
    "NOCLASH_RATE_LIMIT_MESSAGES_PER_CHATBOT": "0",
    "NOCLASH_RATE_LIMIT_AUTH_FAILURES_PER_ADDRESS": "0",
}


def _in_one_window(window: int = 60, room: float = 20.0) -> None:
    """Wait, if need be, until ``room`` seconds are left in the current (epoch-aligned)
    window: requests that straddle two windows would see their counts start again."""
    left = window - time.time() % window
    if left < room:
        time.sleep(left + 0.05)


def _client(served: Served, **kwargs: object) -> httpx.Client:
    return httpx.Client(base_url=served.base_url, timeout=30, **kwargs)


def _limited(answer: httpx.Response) -> bool:
    return (
        answer.status_code == 429
        and answer.headers["content-type"] == PROBLEM
        and answer.json()["type"] == RATE_LIMITED
        and int(answer.headers["retry-after"]) >= 1
    )


@SQLITE_ONLY
def test_with_every_peer_trusted_a_made_up_forwarded_for_buys_no_budget(
    database_url: str, tmp_path: Path
):
    """The server sits behind a proxy that appends the address it saw (nginx's
    ``$proxy_add_x_forwarded_for``), here 203.0.113.9. A client writes its own
    ``X-Forwarded-For`` first, a new one per request: the proxy's entry still counts."""
    env = OFF | {
        "NOCLASH_TRUSTED_PROXIES": "*",
        "NOCLASH_RATE_LIMIT_SESSIONS_PER_ADDRESS": "2",
        "NOCLASH_RATE_LIMIT_AUTH_FAILURES_PER_ADDRESS": "2",
    }
    with serving(database_url, tmp_path, env=env) as served:
        assert served.token is not None
        with _client(served, headers={"Authorization": f"Bearer {served.token}"}) as owner:
            bot = owner.post("/api/chatbots", json={"name": "behind a proxy"}).json()
        sessions_path = f"/api/widget/{bot['public_token']}/sessions"
        _in_one_window()
        with _client(served) as through_proxy:

            def start(made_up: str, client: str = "203.0.113.9") -> httpx.Response:
                forwarded = f"{made_up}, {client}"
                return through_proxy.post(sessions_path, headers={"X-Forwarded-For": forwarded})

            answers = [start(f"198.51.100.{i}") for i in range(5)]
            assert [a.status_code for a in answers[:2]] == [201, 201]
            assert all(_limited(a) for a in answers[2:]), [a.text for a in answers]
            # Another client of the same proxy has its own budget; two headers are one
            # list, the last entry of the last header is the proxy's.
            other = through_proxy.post(
                sessions_path,
                headers=[("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "203.0.113.10")],
            )
            assert other.status_code == 201, other.text
            # With a port, or as bracketed IPv6 (a /64), the proxy's entry is the client.
            assert start("198.51.100.77", "203.0.113.11:4711").status_code == 201
            assert start("198.51.100.78", "203.0.113.11:4712").status_code == 201
            assert _limited(start("198.51.100.79", "203.0.113.11"))
            assert start("x", "[2001:db8:1:2::1]:443").status_code == 201
            assert start("y", "2001:db8:1:2::2").status_code == 201
            assert _limited(start("z", "[2001:db8:1:2::3]"))

            # Wrong bearer tokens count the same way.
            def guess(made_up: str) -> httpx.Response:
                return through_proxy.get(
                    "/api/chatbots",
                    headers={
                        "Authorization": f"Bearer nc_{uuid.uuid4().hex}",
                        "X-Forwarded-For": f"{made_up}, 203.0.113.20",
                    },
                )

            guesses = [guess(f"192.0.2.{i}") for i in range(4)]
            assert [g.status_code for g in guesses[:2]] == [401, 401]
            assert all(_limited(g) for g in guesses[2:]), [g.text for g in guesses]

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            buckets = set(conn.execute(sa.text("SELECT bucket FROM rate_limits")).scalars())
    finally:
        engine.dispose()
    assert {
        "sessions/address/203.0.113.9",
        "sessions/address/203.0.113.10",
        "sessions/address/203.0.113.11",
        "sessions/address/2001:db8:1:2::/64",
        "auth-failures/address/203.0.113.20",
    } <= buckets
    assert not any("198.51.100" in b or "192.0.2." in b for b in buckets), buckets


# -- webhooks: redirects and spellings --------------------------------------------------------


class RedirectingBot(LoopbackPlatform):
    """A bot whose ``POST /hook`` answers ``307`` to ``target`` (a 307 keeps the method and
    the body: a client that followed it would POST the signed event there)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.url = f"{self.base}/hook"
        self.target = target

    def routes(self) -> list[Route]:
        return [Route("/hook", self._hook, methods=["POST"])]

    async def _hook(self, request: Request) -> Response:
        self._record(request, await request.body())
        return Response(status_code=307, headers={"Location": self.target})


def test_the_sender_does_not_follow_a_redirect():
    """Even with the address rule lifted (so the first hop, a loopback bot, is reached):
    a 307 is the bot's answer, retried later, and its Location is never asked."""
    with running(LoopbackBot()) as inside, running(RedirectingBot(inside.url)) as outside:

        async def send() -> SendResult:
            sender = webhooks.WebhookSender(timeout=5)
            event = {"id": str(uuid.uuid4()), "type": "ping", "data": {}}
            post = webhooks.EventPost(outside.url, "whsec_test", event)
            async with webhooks.client(timeout=5, max_connections=1, allow_private=True) as c:
                return await sender.send(c, post)

        result = asyncio.run(send())
        assert result.outcome == Outcome.RETRY
        assert result.status_code == 307
        assert len(outside.received) == 1
        assert inside.requests == []


@SQLITE_ONLY
def test_a_ping_does_not_follow_a_redirect(database_url):
    with (
        running(LoopbackBot()) as inside,
        running(RedirectingBot(inside.url)) as outside,
        start_live_server(database_url, allow_private_webhooks=True) as server,
    ):
        client = server.client(server.user())
        bot = client.post("/api/chatbots", json={"name": "b", "webhook_url": outside.url}).json()
        answer = client.post(f"/api/chatbots/{bot['id']}/webhook-ping")
        assert answer.status_code == 200, answer.text
        ping = answer.json()
        assert ping["delivered"] is False and ping["status_code"] == 307
        assert "the webhook answered 307" in ping["error"]
        assert len(outside.received) == 1
        assert inside.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://0177.0.0.1/hook",  # octal: not a URL httpx reads
        "http://017700000001/hook",  # 127.0.0.1 as one octal number
        "http://127.1/hook",
        "http://0/hook",  # 0.0.0.0
        "http://[::ffff:7f00:1]/hook",  # IPv4-mapped, in hex
        "http://[0:0:0:0:0:ffff:127.0.0.1]/hook",
        "http://[::127.0.0.1]/hook",  # IPv4-compatible (deprecated)
        "http://[fe80::1%eth0]/hook",  # link-local with a zone
        "http://[fe80::1%25eth0]/hook",
        "http://[::]/hook",
        "http://100.64.0.1/hook",  # shared address space
        "http://192.0.0.170/hook",
        "http://127\u30020\u30020\u30021/hook",  # ideographic full stops: 127.0.0.1
        "http://localhost./hook",
        "http://LOCALHOST/hook",
        "http://evil.example@127.0.0.1/hook",
        "http://127.0.0.1:80\\@evil.example/hook",
        "gopher://bot.example/hook",
        "file:///etc/passwd",
    ],
)
def test_more_spellings_of_noclashs_own_network_are_refused(url):
    with pytest.raises(webhooks.UnsafeWebhookUrl):
        asyncio.run(webhooks.check_url(url, allow_private=False, timeout=5))


# -- webhooks: a DNS server that never answers ------------------------------------------------

PUBLIC = "93.184.216.34"


class SilentDns:
    """``socket.getaddrinfo`` for names under ``.silent.test``: each takes ``delay``
    seconds (a DNS server that does not answer until the resolver gives up) and counts
    the lookups under way; every other name goes to the real resolver."""

    def __init__(self, real: Any, delay: float) -> None:
        self.real = real
        self.delay = delay
        self.lock = threading.Lock()
        self.under_way = 0
        self.most = 0

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.endswith(".silent.test"):
            return self.real(host, port, *args, **kwargs)
        with self.lock:
            self.under_way += 1
            self.most = max(self.most, self.under_way)
        try:
            time.sleep(self.delay)
        finally:
            with self.lock:
                self.under_way -= 1
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (PUBLIC, port))]


@pytest.fixture
def silent_dns(monkeypatch) -> Iterator[SilentDns]:
    dns = SilentDns(socket.getaddrinfo, delay=4.0)
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    yield dns
    # The lookups still sleeping end before the resolver is put back.
    deadline = time.monotonic() + 10
    while dns.under_way and time.monotonic() < deadline:
        time.sleep(0.05)


@SQLITE_ONLY
def test_hosts_that_never_resolve_do_not_stall_the_api(database_url, silent_dns):
    """60 webhook URLs at once whose names take 4 s to resolve (the API waits 2 s): each is
    a 422 within its timeout, as before; meanwhile another user's requests, which need
    worker threads for their token and their read, are answered at once; and at most
    RESOLVER_THREADS lookups run at a time."""
    overrides = {"allow_private_webhooks": False, "platform_timeout_seconds": 2.0}
    with start_live_server(database_url, **overrides) as server:
        owner = server.client(server.user())
        bot = owner.post("/api/chatbots", json={"name": "slow names"}).json()

        def set_url(i: int) -> httpx.Response:
            url = f"https://n{i}.silent.test/hook"
            return owner.patch(f"/api/chatbots/{bot['id']}", json={"webhook_url": url})

        with ThreadPoolExecutor(60) as pool:
            started = time.monotonic()
            answers = [pool.submit(set_url, i) for i in range(60)]
            while silent_dns.under_way < webhooks.RESOLVER_THREADS:
                assert time.monotonic() - started < 3, "the lookups did not start"
                time.sleep(0.01)
            # Another user, a token this process has not seen: a lookup and a read.
            other = server.client(server.user())
            asked = time.monotonic()
            listed = other.get("/api/chatbots")
            took = time.monotonic() - asked
            assert listed.status_code == 200, listed.text
            assert took < 1.0, f"another user's request waited {took:.1f} s"
            done = [a.result() for a in answers]
        for answer in done:
            assert answer.status_code == 422, answer.text
            assert "could not be resolved within 2 s" in answer.json()["detail"]
        assert time.monotonic() - started < 6
        assert silent_dns.most <= webhooks.RESOLVER_THREADS
        assert owner.get(f"/api/chatbots/{bot['id']}").json()["webhook_url"] is None
        # Every lookup's thread, abandoned or not, gives its place back when it ends.
        deadline = time.monotonic() + 10
        while webhooks._resolvers.live and time.monotonic() < deadline:
            time.sleep(0.05)
        assert webhooks._resolvers.live == 0


def test_a_database_error_never_carries_its_parameters(engine) -> None:
    """SQLAlchemy writes a failed statement's parameters into the exception's text, and
    the API logs database errors (a session killed, a timeout) with that text: a webhook
    secret or an access token being saved at that moment went to the logs. Every engine
    noclash makes hides them (the dispatcher's own engines too)."""
    import sqlalchemy as sa

    from noclash.db.dialects import dialect_for

    secret = "whsec_" + uuid.uuid4().hex
    statement = sa.text("INSERT INTO no_such_table (secret) VALUES (:secret)")
    engines = [engine]
    dialect = dialect_for(engine)
    quick = None if dialect.supports_async_driver else dialect.nonblocking_engine(engine)
    if quick is not None:
        engines.append(quick)
    for each in engines:
        with pytest.raises(sa.exc.DBAPIError) as caught, each.begin() as conn:
            conn.execute(statement, {"secret": secret})
        assert secret not in str(caught.value), str(caught.value)
    if quick is not None:
        quick.dispose()
    if dialect.supports_async_driver:

        async def attempt() -> str:
            async_engine = dialect.async_engine(engine, pool_size=1, max_overflow=0)
            try:
                async with async_engine.begin() as conn:
                    await conn.execute(statement, {"secret": secret})
            except sa.exc.DBAPIError as exc:
                return str(exc)
            finally:
                await async_engine.dispose()
            return "no error"

        text = asyncio.run(attempt())
        assert "no_such_table" in text and secret not in text, text
