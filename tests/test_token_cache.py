"""The per-process token cache remembers only verified tokens, and only briefly."""

from __future__ import annotations

import time

from noclash.chat.users import TokenCache, User, create_user, lookup_token, revoke_token
from noclash.unique import uuid7
from noclash.unique.ids import token_hash


def test_entries_expire():
    cache = TokenCache(ttl=0.05)
    user = User(uuid7(), "a@example.com", False)
    cache.put("h", user, cache.generation)
    assert cache.get("h") == user
    time.sleep(0.06)
    assert cache.get("h") is None


def test_size_is_bounded():
    cache = TokenCache(ttl=60, max_entries=3)
    for i in range(10):
        cache.put(str(i), User(uuid7(), f"{i}@example.com", False), cache.generation)
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


def test_a_lookup_that_began_before_a_revoke_is_not_cached(engine):
    """A lookup reads the user, the same process revokes the token and forgets it, then
    the lookup's answer arrives: it must not put the revoked token back for a whole ttl."""
    cache = TokenCache(ttl=60)
    user, token = create_user(engine, "racing@example.com")
    digest = token_hash(token)
    generation = cache.generation  # the request's lookup begins
    found = lookup_token(engine, digest)  # ... and reads the user before the revoke
    assert found == user
    revoke_token(engine, email="racing@example.com")  # the revoke commits
    cache.forget(user.id)  # and the revoking request forgets the token here
    cache.put(digest, found, generation)  # the stale lookup ends
    assert cache.get(digest) is None
    # A lookup that begins now sees the revoke.
    assert lookup_token(engine, digest) is None
    # An ordinary lookup is still remembered.
    other, other_token = create_user(engine, "calm@example.com")
    cache.put(token_hash(other_token), other, cache.generation)
    assert cache.get(token_hash(other_token)) == other
