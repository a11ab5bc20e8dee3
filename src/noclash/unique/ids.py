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
import re
import sys
import uuid
from datetime import datetime
from uuid import UUID

if sys.version_info >= (3, 14):  # pragma: no cover - depends on the interpreter
    from uuid import uuid7 as _uuid7
else:
    from uuid6 import uuid7 as _uuid7


def uuid7() -> UUID:
    """A new UUIDv7 as a plain :class:`uuid.UUID`."""
    return UUID(int=_uuid7().int)


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
