"""Idempotency keys: run a request once per (scope, key), replay its response afterwards.

The database is the only arbiter, so any number of processes can serve the same keys::

    claim     INSERT INTO idempotency_keys (...) ON CONFLICT (scope, key) DO NOTHING RETURNING id
              -- no row back: somebody holds the key; read it and decide:
              --   another request hash            -> Mismatch   (the caller answers 422)
              --   response stored                 -> Replay     (the stored response)
              --   still running                   -> InProgress (wait and look again, or 409)
              --   expired                         -> one UPDATE ... WHERE expires_at <= now
              --                                      replaces it; whoever's UPDATE matches wins
    complete  UPDATE ... SET response_* WHERE id = :claim AND response_status IS NULL
    release   DELETE ... WHERE id = :claim AND response_status IS NULL  (the request failed)

A claim is committed before the request runs (its own short transaction), so a concurrent
duplicate sees it at once and never executes the request a second time. A claim whose
request died with its process is taken over after ``lease`` (one conditional UPDATE, so
two retries cannot both take it over); until then the duplicate is told the first is still
in progress.

The module knows nothing of HTTP or chat: a "response" is a status, headers and bytes,
and the table is the caller's, with these columns (noclash's is ``idempotency_keys``)::

    id (uuid, primary key), scope, key (UNIQUE (scope, key)), method, path, request_hash,
    response_status (NULL while running), response_headers (JSON), response_body (bytes),
    created_at, expires_at (timezone-aware timestamps)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import Table
from sqlalchemy.engine import Connection

from noclash.db.dialects import dialect_for
from noclash.db.types import utcnow
from noclash.unique.ids import uuid7

MAX_KEY_LENGTH = 255
MAX_SCOPE_LENGTH = 200
DEFAULT_LEASE = timedelta(minutes=5)
# Replacing an expired or stale row can lose to another replacer; then look again.
_ATTEMPTS = 5


class InvalidIdempotencyKey(ValueError):
    """The key is empty, too long or not printable ASCII (RFC 9110 field value rules)."""


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Claimed:
    """This caller holds the key: run the request, then :func:`complete` or :func:`release`."""

    claim_id: UUID


@dataclass(frozen=True)
class Replay:
    """The first request finished; answer with its stored response."""

    response: StoredResponse


@dataclass(frozen=True)
class InProgress:
    """The first request holds the key and has not finished yet."""

    started_at: datetime


@dataclass(frozen=True)
class Mismatch:
    """The key was used for a different request (other method, path or body)."""

    method: str
    path: str


Outcome = Claimed | Replay | InProgress | Mismatch


def check_key(key: str) -> str:
    """``key`` if it is usable; :class:`InvalidIdempotencyKey` otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise InvalidIdempotencyKey(
            f"an idempotency key is 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def request_hash(method: str, path: str, body: bytes) -> str:
    """sha256 of the request. A JSON body is canonicalised first (key order, whitespace),
    so a client that re-serialises the same document on retry is not told it changed."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def claim(
    conn: Connection,
    table: Table,
    *,
    scope: str,
    key: str,
    method: str,
    path: str,
    request_hash: str,
    ttl: timedelta,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> Outcome:
    """Try to take ``(scope, key)`` for this request; say what the caller must do.

    Commit the caller's transaction right after a :class:`Claimed` outcome, before running
    the request: the committed row is what makes a concurrent duplicate wait instead of
    executing again.
    """
    check_key(key)
    if not scope or len(scope) > MAX_SCOPE_LENGTH:
        raise ValueError(f"scope must be 1 to {MAX_SCOPE_LENGTH} characters")
    now = now or utcnow()
    fresh = {
        "method": method.upper(),
        "path": path[:500],
        "request_hash": request_hash,
        "response_status": None,
        "response_headers": None,
        "response_body": None,
        "created_at": now,
        "expires_at": now + ttl,
    }
    where_key = sa.and_(table.c.scope == scope, table.c.key == key)
    for _ in range(_ATTEMPTS):
        claim_id = uuid7()
        inserted = conn.execute(
            dialect_for(conn)
            .insert(table)
            .values(id=claim_id, scope=scope, key=key, **fresh)
            .on_conflict_do_nothing(index_elements=["scope", "key"])
            .returning(table.c.id)
        ).first()
        if inserted is not None:
            return Claimed(claim_id)
        row = conn.execute(sa.select(table).where(where_key)).first()
        if row is None:  # released between our INSERT and this read: try again
            continue
        stale = row.response_status is None and row.created_at <= now - lease
        if row.expires_at <= now or stale:
            # Replace in one statement conditioned on what we saw, so of two concurrent
            # replacers exactly one matches; the loser loops and reads the winner's row.
            replaced = conn.execute(
                sa.update(table)
                .where(
                    table.c.id == row.id,
                    sa.or_(
                        table.c.expires_at <= now,
                        sa.and_(
                            table.c.response_status.is_(None),
                            table.c.created_at <= now - lease,
                        ),
                    ),
                )
                .values(id=claim_id, **fresh)
                .returning(table.c.id)
            ).first()
            if replaced is not None:
                return Claimed(claim_id)
            continue
        if row.request_hash != request_hash:
            return Mismatch(row.method, row.path)
        if row.response_status is None:
            return InProgress(row.created_at)
        headers = [(str(k), str(v)) for k, v in (row.response_headers or [])]
        return Replay(StoredResponse(row.response_status, headers, bytes(row.response_body)))
    # Every attempt lost a race to a replacer or a releaser: report it as in progress, the
    # caller's answer (wait, then 409) is right for a key that busy.
    return InProgress(now)


def complete(conn: Connection, table: Table, claim_id: UUID, response: StoredResponse) -> bool:
    """Store the response of the claimed request; False if the claim was taken over."""
    done = conn.execute(
        sa.update(table)
        .where(table.c.id == claim_id, table.c.response_status.is_(None))
        .values(
            response_status=response.status,
            response_headers=[list(pair) for pair in response.headers],
            response_body=response.body,
        )
    )
    return done.rowcount == 1


def release(conn: Connection, table: Table, claim_id: UUID) -> None:
    """Give the key back after a failed request, so a retry executes it anew."""
    conn.execute(sa.delete(table).where(table.c.id == claim_id, table.c.response_status.is_(None)))


def lookup(conn: Connection, table: Table, *, scope: str, key: str) -> Any:
    """The stored row for ``(scope, key)``, or None (for tests and the docs)."""
    return conn.execute(sa.select(table).where(table.c.scope == scope, table.c.key == key)).first()


def purge_expired(
    conn: Connection, table: Table, *, now: datetime | None = None, limit: int = 1000
) -> int:
    """Delete up to ``limit`` expired keys (expired ones are also replaced on reuse)."""
    now = now or utcnow()
    ids = sa.select(table.c.id).where(table.c.expires_at <= now).limit(limit)
    return conn.execute(sa.delete(table).where(table.c.id.in_(ids.scalar_subquery()))).rowcount


__all__ = [
    "Claimed",
    "InProgress",
    "InvalidIdempotencyKey",
    "Mismatch",
    "Outcome",
    "Replay",
    "StoredResponse",
    "check_key",
    "claim",
    "complete",
    "lookup",
    "purge_expired",
    "release",
    "request_hash",
]
