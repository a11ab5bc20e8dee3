"""The per-process token cache remembers only verified tokens, and only briefly."""

from __future__ import annotations

import time

from noclash.chat.users import TokenCache, User, create_user, lookup_token
from noclash.unique import uuid7
from noclash.unique.ids import token_hash


def test_entries_expire():
    cache = TokenCache(ttl=0.05)
    user = User(uuid7(), "a@example.com", False)
    cache.put("h", user)
    assert cache.get("h") == user
    time.sleep(0.06)
    assert cache.get("h") is None


def test_size_is_bounded():
    cache = TokenCache(ttl=60, max_entries=3)
    for i in range(10):
        cache.put(str(i), User(uuid7(), f"{i}@example.com", False))
    assert len(cache._entries) <= 3


def test_lookup_reads_the_database(engine):
    user, token = create_user(engine, "cached@example.com")
    assert lookup_token(engine, token_hash(token)) == user
    assert lookup_token(engine, token_hash(token + "x")) is None


def test_unknown_tokens_are_never_remembered(live_server):
    """A 401 is decided by the database every time: a token created after a failed
    attempt works at once."""
    anonymous = live_server.client("nc_" + "0" * 32)
    assert anonymous.get("/api/chatbots").status_code == 401
    token = live_server.user()
    assert live_server.client(token).get("/api/chatbots").status_code == 200
    assert anonymous.get("/api/chatbots").status_code == 401
