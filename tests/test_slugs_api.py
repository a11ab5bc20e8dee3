"""Slugs over real HTTP on SQLite and PostgreSQL (seed 004 done right)."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

PROBLEM = "application/problem+json"


@pytest.fixture
def owner(live_server) -> tuple[httpx.Client, str]:
    client = live_server.client(live_server.user())
    bot = client.post("/api/chatbots", json={"name": "Support"})
    assert bot.status_code == 201
    return client, bot.json()["id"]


def _create(client: httpx.Client, bot_id: str, **body) -> dict:
    r = client.post(f"/api/chatbots/{bot_id}/conversations", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _rename(client: httpx.Client, conversation_id: str, title: str) -> dict:
    r = client.patch(f"/api/conversations/{conversation_id}", json={"title": title})
    assert r.status_code == 200, r.text
    return r.json()


def test_slug_comes_from_the_title(owner):
    client, bot = owner
    assert _create(client, bot, title="Navigate to example.com")["slug"] == (
        "navigate-to-example-com"
    )
    assert _create(client, bot, title="Привет, мир")["slug"] == "privet-mir"
    assert _create(client, bot, title="🎉🎉")["slug"] == "conversation"
    assert _create(client, bot)["slug"].startswith("conversation-")
    long = _create(client, bot, title="word " * 100)["slug"]
    assert len(long) <= 60 and not long.endswith("-")


def test_50_concurrent_creates_with_one_title(live_server, owner):
    """50 clients held at a barrier create "Navigate to example.com": all 201, exactly one
    plain slug, the other 49 distinct ``base-xxxx``."""
    _client, bot = owner
    token = _client.headers["authorization"]
    n = 50
    barrier = threading.Barrier(n)

    def run(_: int) -> httpx.Response:
        with httpx.Client(
            base_url=live_server.base_url, headers={"Authorization": token}, timeout=60
        ) as c:
            barrier.wait()
            return c.post(
                f"/api/chatbots/{bot}/conversations", json={"title": "Navigate to example.com"}
            )

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(run, range(n)))
    assert [r.status_code for r in responses] == [201] * n, {r.text for r in responses}
    found = [r.json()["slug"] for r in responses]
    base = "navigate-to-example-com"
    assert found.count(base) == 1
    suffixed = [s for s in found if s != base]
    assert len(set(suffixed)) == n - 1
    assert all(re.fullmatch(re.escape(base) + r"-[a-z0-9]{4,}", s) for s in suffixed)


def test_renames_and_redirects(owner):
    client, bot = owner
    billing = _create(client, bot, title="Billing")
    refund = _create(client, bot, title="Refund")
    assert (billing["slug"], refund["slug"]) == ("billing", "refund")

    # To a taken title: a suffix.
    moved = _rename(client, refund["id"], "Billing")
    assert re.fullmatch(r"billing-[a-z0-9]{4}", moved["slug"]) and moved["title"] == "Billing"
    # To its own title (same base): the slug is kept.
    assert _rename(client, refund["id"], "billing!")["slug"] == moved["slug"]
    assert _rename(client, billing["id"], "BILLING")["slug"] == "billing"

    # The old slug redirects (308) to the current one.
    old = client.get(f"/api/chatbots/{bot}/conversations/by-slug/refund")
    assert old.status_code == 308
    assert old.headers["location"] == f"/api/chatbots/{bot}/conversations/by-slug/{moved['slug']}"
    followed = client.get(old.headers["location"])
    assert followed.status_code == 200 and followed.json()["id"] == refund["id"]
    followed = client.get(
        f"/api/chatbots/{bot}/conversations/by-slug/refund", follow_redirects=True
    )
    assert followed.json()["slug"] == moved["slug"]

    # A former slug is not handed to another conversation ...
    newcomer = _create(client, bot, title="Refund")
    assert re.fullmatch(r"refund-[a-z0-9]{4}", newcomer["slug"])
    # ... but its own conversation may take it back.
    assert _rename(client, refund["id"], "Refund")["slug"] == "refund"
    current = client.get(f"/api/chatbots/{bot}/conversations/by-slug/refund")
    assert current.status_code == 200 and current.json()["id"] == refund["id"]


def test_unknown_slug_other_owner_and_bad_input(live_server, owner):
    client, bot = owner
    conv = _create(client, bot, title="Private")
    assert client.get(f"/api/chatbots/{bot}/conversations/by-slug/nope").status_code == 404
    assert client.get("/api/chatbots/not-a-uuid/conversations/by-slug/x").status_code == 404
    stranger = live_server.client(live_server.user())
    for r in (
        stranger.get(f"/api/chatbots/{bot}/conversations/by-slug/private"),
        stranger.patch(f"/api/conversations/{conv['id']}", json={"title": "mine"}),
        stranger.post(f"/api/chatbots/{bot}/conversations", json={"title": "x"}),
    ):
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    for body in ({"title": "x" * 501}, {"title": "x", "slug": "chosen"}, {}):
        r = client.patch(f"/api/conversations/{conv['id']}", json=body)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    r = client.post(f"/api/chatbots/{bot}/conversations", json={"title": "x" * 501})
    assert r.status_code == 422
    assert client.get(f"/api/chatbots/{bot}/conversations/by-slug/private").json()["title"] == (
        "Private"
    )


def test_concurrent_renames_to_one_title(live_server, owner):
    """20 conversations renamed to one title at once: one plain slug, 19 suffixed."""
    client, bot = owner
    ids = [_create(client, bot, title=f"topic {i}")["id"] for i in range(20)]
    token = client.headers["authorization"]
    barrier = threading.Barrier(len(ids))

    def run(cid: str) -> httpx.Response:
        with httpx.Client(
            base_url=live_server.base_url, headers={"Authorization": token}, timeout=60
        ) as c:
            barrier.wait()
            return c.patch(f"/api/conversations/{cid}", json={"title": "Same Topic"})

    with ThreadPoolExecutor(len(ids)) as pool:
        responses = list(pool.map(run, ids))
    assert [r.status_code for r in responses] == [200] * len(ids), {r.text for r in responses}
    found = [r.json()["slug"] for r in responses]
    assert found.count("same-topic") == 1 and len(set(found)) == len(ids)
