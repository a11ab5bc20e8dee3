"""Identifiers and secrets.

- Primary keys are UUIDv7: time-ordered, so B-tree inserts append and keyset pagination
  by id follows creation order, with no sequence to fall behind after an import.
- Public tokens, session ids and API tokens are UUIDv4: 122 random bits, so the birthday
  bound stays negligible at any realistic row count (a short random string collides
  after a few thousand rows, and a check-then-insert around it races).
  Their unique index stays: entropy makes a collision improbable, the index makes it
  impossible.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import uuid
from datetime import datetime
from uuid import UUID

# UUIDv7 (RFC 9562, section 6.2, method 1): 48 bits of Unix milliseconds, then a 42-bit
# counter (12 bits of rand_a, the top 30 of rand_b) that orders the ids of one
# millisecond, then 32 random bits. The counter starts at a random value below 2**41 in
# each new millisecond, so it has at least 2**41 steps before it runs out; only then does
# the timestamp move on by itself. Python 3.14's uuid.uuid7 does the same.
#
# Why not the uuid6 package's uuid7: it makes the ids of one millisecond distinct by
# adding a millisecond to the timestamp for each, so a process that makes more than a
# thousand ids a second runs ahead of the clock (66,000 ids in 0.2 s put it 66 s ahead).
# Its ids then sort after those other processes make later, and "made before t", read
# from the id (the retention rule), held events made seconds ago for minutes.
_COUNTER_BITS = 42
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_uuid7_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> UUID:
    """A new UUIDv7: time-ordered, and ordered within this process even when the clock
    stands still or steps back (the last timestamp is kept and the counter moves on)."""
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    tail = int.from_bytes(os.urandom(10), "big")
    with _uuid7_lock:
        if now_ms > _last_ms:
            _last_ms, _counter = now_ms, (tail >> 32) & (_COUNTER_MAX >> 1)
        elif _counter < _COUNTER_MAX:
            _counter += 1
        else:  # 2**41 ids in one millisecond: borrow the next one
            _last_ms, _counter = _last_ms + 1, (tail >> 32) & (_COUNTER_MAX >> 1)
        ms, counter = _last_ms, _counter
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (counter >> 30) << 64
        | 0b10 << 62
        | (counter & 0x3FFF_FFFF) << 32
        | tail & 0xFFFF_FFFF
    )
    return UUID(int=value)


def uuid7_floor(at: datetime) -> UUID:
    """The smallest UUIDv7 of the millisecond ``at`` falls in (``at`` with a time zone):
    every UUIDv7 made before that millisecond sorts below it, so ``id < uuid7_floor(t)``
    is "made before ``t``", read from the primary key's index alone. A time before 1970
    gives the floor of 1970's first millisecond (no UUIDv7 was made before it); one after
    what 48 bits of milliseconds hold (the year 10889) is a ValueError."""
    millis = max(0, int(at.timestamp() * 1000))
    if millis >= 1 << 48:
        raise ValueError(f"{at} is after what a UUIDv7 can name")
    return UUID(int=(millis << 80) | (0x7 << 76) | (0b10 << 62))


def uuid4() -> UUID:
    """A new random UUIDv4."""
    return uuid.uuid4()


# A UUID as text: 32 hex digits, with or without the four hyphens of the canonical form.
# ``UUID()`` itself also takes braces, a ``urn:uuid:`` prefix and any number of hyphens
# anywhere, so one id had endless spellings (a path padded with 480 hyphens still named
# the chatbot, and a request's idempotency scope is its path).
_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}(-?)[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{12}"
)


def parse_uuid(value: str) -> UUID | None:
    """``value`` as a UUID, or ``None`` if it is not one (only its canonical spelling, or
    its 32 hex digits alone).

    Lookups by a client-supplied token go through here first, so a malformed token is a
    miss (404) instead of a failed cast in the database (which would be a 500).
    """
    if not isinstance(value, str) or not _UUID_TEXT.fullmatch(value):
        return None
    return UUID(value)


def new_api_token(prefix: str = "nc_") -> str:
    """A bearer token: a recognisable prefix (for secret scanners) and a UUIDv4."""
    return prefix + uuid.uuid4().hex


def token_hash(token: str) -> str:
    """How API tokens are stored: sha256, so a database leak does not leak credentials."""
    return hashlib.sha256(token.encode()).hexdigest()
