"""A webhook URL never leads noclash into its own network (server-side request forgery).

The rule (:mod:`noclash.channels.webhooks`) is checked twice, and both are tried here with
``NOCLASH_ALLOW_PRIVATE_WEBHOOKS`` off (the rest of the suite turns it on, for its bots on
127.0.0.1):

- when the URL is set: ``POST``/``PATCH /api/chatbots`` answer 422 naming ``webhook_url``
  for loopback, private, link-local, multicast, reserved and unspecified addresses, as IP
  literals in any spelling, as ``localhost``, and as a name that resolves to one; nothing
  is stored;
- when an event is sent, on SQLite and PostgreSQL with a real dispatcher: a name that
  resolved to a public address when it was set and to 127.0.0.1 now is not connected to
  (the attempt fails, retryable, saying why), though a bot listens right there.

Names other than ``localhost`` resolve through :func:`fake_dns`, which replaces
``socket.getaddrinfo`` for the names a test gives it and asks the real resolver for every
other one: noclash's own resolution, its checks and its connections run unchanged.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from noclash.channels import webhooks
from noclash.channels.webhooks import RefusedAddress, UnsafeWebhookUrl, parse_url, refusal
from noclash.db.tables import WEBHOOK_DESTINATION, chatbots, deliveries
from tests.support.bots import LoopbackBot
from tests.support.outbound import outbound_stack
from tests.support.platforms import running, wait_for
from tests.support.server import start_live_server

PUBLIC = "93.184.216.34"


class FakeDns:
    """``socket.getaddrinfo`` for some names; the real one for the rest."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.names: dict[str, list[str]] = {}
        # Seconds a name takes to resolve (a resolver that times out).
        self.delays: dict[str, float] = {}
        # How often each name was asked for.
        self.asked: dict[str, int] = {}
        # What a name resolves to from its second lookup on (a rebinding DNS server).
        self.then: dict[str, list[str]] = {}

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.names:
            return self.real(host, port, *args, **kwargs)
        time.sleep(self.delays.get(name, 0.0))
        self.asked[name] = self.asked.get(name, 0) + 1
        answer = (
            self.names[name] if self.asked[name] == 1 else self.then.get(name, self.names[name])
        )
        if not answer:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        port = int(port or 0)
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (ip, port, 0, 0) if ":" in ip else (ip, port),
            )
            for ip in answer
        ]


@pytest.fixture
def fake_dns(monkeypatch) -> Iterator[FakeDns]:
    dns = FakeDns(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    yield dns


# -- the rule, address by address -------------------------------------------------------------


@pytest.mark.parametrize(
    "address,kind",
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.7", "a private address"),
        ("172.16.3.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd00::1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("224.0.0.251", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("100.64.0.1", "a non-public address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("64:ff9b::a00:7", "a private address"),
        ("2002:7f00:1::", "a 6to4 address of a non-public IPv4 address"),
        ("fec0::1", "a site-local address"),
    ],
)
def test_addresses_inside_a_network_are_refused(address, kind):
    assert refusal(address) == kind


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address):
    assert refusal(address) is None


@pytest.mark.parametrize(
    "url,says",
    [
        ("ftp://bot.example/hook", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("bot.example/hook", "http:// or https://"),
        ("https:///hook", "no host"),
        ("https://user:pw@bot.example/hook", "user name or password"),
        ("https://bot.example/a b", "spaces or control characters"),
        ("https://bot.example/\n", "spaces or control characters"),
        ("https://bot.example:99999/", "port must be 1 to 65535"),
        ("https://bot.example:0/", "port must be 1 to 65535"),
        ("https://bot.exa mple/", "spaces or control characters"),
        ("https://[::1/", "not a valid URL"),
        ("https://xn--zz/", "not a valid host name"),
    ],
)
def test_the_urls_form(url, says):
    with pytest.raises(UnsafeWebhookUrl, match=says):
        parse_url(url)


def test_the_senders_connections_are_checked_when_opened(fake_dns):
    """The webhook client itself, as the dispatcher uses it: a name resolving to a
    loopback address is not connected to (a bot listens there), a public one would be."""
    fake_dns.names["rebound.test"] = ["127.0.0.1"]

    async def post(url: str) -> BaseException | None:
        client = webhooks.client(timeout=2, max_connections=2, allow_private=False)
        async with client:
            try:
                await client.post(url, content=b"{}")
            except httpx.HTTPError as exc:
                return exc
        return None

    with running(LoopbackBot()) as bot:
        for host in ("rebound.test", "localhost", "127.0.0.1"):
            error = asyncio.run(post(f"http://{host}:{bot.port}/hook"))
            assert isinstance(error, httpx.ConnectError), (host, error)
            assert isinstance(error.__cause__, RefusedAddress), (host, error)
            assert "127.0.0.1" in str(error) or "loopback" in str(error)
        assert bot.requests == []

        # The same client with the rule lifted does reach the bot (the refusal above is
        # the rule, not a broken client).
        async def allowed() -> int:
            client = webhooks.client(timeout=2, max_connections=2, allow_private=True)
            async with client:
                return (await client.post(f"http://rebound.test:{bot.port}/hook")).status_code

        assert asyncio.run(allowed()) == 200


def test_a_connection_goes_to_the_address_that_was_checked(fake_dns, monkeypatch):
    """One lookup per connection, and the connection opened to the address it checked:
    a DNS server that answers a second lookup with another address (rebinding) is never
    asked twice. 127.0.0.1 stands for a public address here (the rule is told so), so
    the request can reach a bot; the bot sees the name in Host, as with any client."""
    fake_dns.names["bot.public.test"] = ["127.0.0.1"]
    fake_dns.then["bot.public.test"] = ["10.9.9.9"]  # what a second lookup would get
    monkeypatch.setattr(webhooks, "refusal", lambda address: None)

    async def post(url: str) -> int:
        async with webhooks.client(timeout=2, max_connections=2, allow_private=False) as client:
            return (await client.post(url, content=b"{}")).status_code

    with running(LoopbackBot()) as bot:
        assert asyncio.run(post(f"http://bot.public.test:{bot.port}/hook")) == 200
        assert fake_dns.asked["bot.public.test"] == 1
        assert bot.requests[0].headers["host"] == f"bot.public.test:{bot.port}"


# -- when the URL is set ----------------------------------------------------------------------

REFUSED = [
    "http://127.0.0.1:8080/hook",
    "http://[::1]/hook",
    "http://10.0.0.7/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://localhost:9000/hook",
    "http://bot.internal.test/hook",  # resolves to 127.0.0.1 (fake_dns)
    "http://mixed.test/hook",  # one public address and one private: refused
    "http://2130706433/hook",  # 127.0.0.1 in decimal
    "http://0x7f.1/hook",  # and in hex
    "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://nowhere.test/hook",  # does not resolve
    "ftp://bot.public.test/hook",
    "https://user:secret@bot.public.test/hook",
]


@pytest.fixture
def strict_server(database_url, fake_dns):
    fake_dns.names |= {
        "bot.internal.test": ["127.0.0.1"],
        "mixed.test": [PUBLIC, "10.1.2.3"],
        "nowhere.test": [],
        "bot.public.test": [PUBLIC, "2606:4700:4700::1111"],
    }
    with start_live_server(database_url, allow_private_webhooks=False) as server:
        yield server


def _count(server) -> int:
    with server.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(chatbots)).scalar_one()


def test_the_api_refuses_urls_into_noclashs_network(strict_server):
    client = strict_server.client(strict_server.user())
    bot = client.post("/api/chatbots", json={"name": "bot"}).json()
    before = _count(strict_server)
    wrong = []
    for url in REFUSED:
        for answer in (
            client.post("/api/chatbots", json={"name": "ssrf", "webhook_url": url}),
            client.patch(f"/api/chatbots/{bot['id']}", json={"webhook_url": url}),
        ):
            problem = answer.json()
            fields = [f["field"] for f in problem.get("fields") or []]
            if answer.status_code != 422 or fields != ["webhook_url"]:
                wrong.append((url, answer.status_code, answer.text))
    assert wrong == []
    assert _count(strict_server) == before
    assert client.get(f"/api/chatbots/{bot['id']}").json()["webhook_url"] is None


def test_the_refusal_says_why(strict_server):
    client = strict_server.client(strict_server.user())
    said = {
        url: client.post("/api/chatbots", json={"name": "x", "webhook_url": url}).json()["detail"]
        for url in ("http://localhost/h", "http://bot.internal.test/h", "http://10.0.0.7/h",
                    "http://169.254.169.254/", "http://nowhere.test/h")
    }  # fmt: skip
    assert said["http://localhost/h"].startswith(
        "webhook_url's host localhost resolves to 127.0.0.1, a loopback address"
    )
    assert (
        "bot.internal.test resolves to 127.0.0.1, a loopback address"
        in said["http://bot.internal.test/h"]
    )
    assert "host 10.0.0.7 is a private address" in said["http://10.0.0.7/h"]
    assert "169.254.169.254 is a link-local address" in said["http://169.254.169.254/"]
    assert "NOCLASH_ALLOW_PRIVATE_WEBHOOKS=1" in said["http://10.0.0.7/h"]
    assert "cannot be resolved" in said["http://nowhere.test/h"]
    # A URL of the wrong form says what is wrong with it too (it was the schema's pattern).
    for url, says in [
        ("ftp://bot.public.test/hook", "webhook_url must be an http:// or https:// URL"),
        ("https:///hook", "webhook_url has no host"),
        ("https://bot.public.test/a b", "must not contain spaces or control characters"),
    ]:
        answer = client.post("/api/chatbots", json={"name": "x", "webhook_url": url})
        assert answer.status_code == 422 and says in answer.json()["detail"], answer.text


def test_public_urls_are_stored_shown_and_cleared(strict_server):
    client = strict_server.client(strict_server.user())
    created = client.post(
        "/api/chatbots", json={"name": "bot", "webhook_url": f"http://{PUBLIC}/hook"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["webhook_url"] == f"http://{PUBLIC}/hook"
    assert created.json()["has_webhook_secret"] is False
    bot_id = created.json()["id"]
    changed = client.patch(
        f"/api/chatbots/{bot_id}", json={"webhook_url": "https://bot.public.test/events?v=1"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["webhook_url"] == "https://bot.public.test/events?v=1"
    listed = client.get("/api/chatbots").json()["items"]
    assert [b["webhook_url"] for b in listed] == ["https://bot.public.test/events?v=1"]
    cleared = client.patch(f"/api/chatbots/{bot_id}", json={"webhook_url": None})
    assert cleared.status_code == 200 and cleared.json()["webhook_url"] is None
    assert client.patch(f"/api/chatbots/{bot_id}", json={"webhook_url": ""}).status_code == 422
    too_long = "https://bot.public.test/" + "x" * 2000
    answer = client.patch(f"/api/chatbots/{bot_id}", json={"webhook_url": too_long})
    assert answer.status_code == 422 and answer.json()["fields"][0]["field"] == "webhook_url"


def test_a_name_that_does_not_resolve_in_time_is_refused(database_url, fake_dns):
    """The resolver is asked off the event loop and waited for no longer than
    NOCLASH_PLATFORM_TIMEOUT_SECONDS: a 422, and the server answers others meanwhile."""
    fake_dns.names["slow.test"] = [PUBLIC]
    fake_dns.delays["slow.test"] = 3.0
    overrides = {"allow_private_webhooks": False, "platform_timeout_seconds": 1.0}
    with start_live_server(database_url, **overrides) as server:
        client = server.client(server.user())
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            slow = pool.submit(
                client.post,
                "/api/chatbots",
                json={"name": "x", "webhook_url": "https://slow.test/"},
            )
            time.sleep(0.2)
            assert client.get("/healthz").status_code == 200
            assert time.monotonic() - started < 0.9, "the event loop waited for the resolver"
            answer = slow.result()
        assert answer.status_code == 422, answer.text
        assert "slow.test could not be resolved within 1 s" in answer.json()["detail"]
        assert time.monotonic() - started < 2.5


# -- when an event is sent --------------------------------------------------------------------


def test_a_name_that_turned_private_is_not_sent_to(database_url, fake_dns):
    """Accepted while it resolved to a public address; by the time the event is sent it
    resolves to 127.0.0.1, where a bot listens. The dispatcher does not connect: each
    attempt fails, retryable, saying why, and the bot receives nothing."""
    fake_dns.names["bot.rebind.test"] = [PUBLIC]
    with (
        running(LoopbackBot()) as bot,
        outbound_stack(database_url, allow_private_webhooks=False) as stack,
    ):
        url = f"http://bot.rebind.test:{bot.port}/hook"
        chatbot = stack.chatbot(webhook_url=url)
        fake_dns.names["bot.rebind.test"] = ["127.0.0.1"]
        custom = stack.api.post(
            f"/api/chatbots/{chatbot['id']}/connections",
            json={"channel": "custom", "external_id": "sms"},
        ).json()
        inbound = stack.api.post(
            f"/api/connections/{custom['id']}/inbound",
            json={"psid": "ada", "message_id": "m1", "text": "hello"},
        )
        assert inbound.status_code == 201, inbound.text

        def webhook_deliveries() -> list[Any]:
            with stack.server.engine.connect() as conn:
                return conn.execute(
                    sa.select(deliveries).where(deliveries.c.destination == WEBHOOK_DESTINATION)
                ).all()

        assert wait_for(
            lambda: any(d.attempts >= 3 for d in webhook_deliveries()), timeout=20, every=0.1
        ), webhook_deliveries()
        first = min(webhook_deliveries(), key=lambda d: d.id)
        assert first.status in ("queued", "sending")  # retried, not given up
        assert "bot.rebind.test resolves to 127.0.0.1, a loopback address" in first.last_error
        assert bot.requests == []
