"""Idempotency keys: run a request once per (scope, key), replay its response afterwards.

The key's outcome commits in the same transaction as the work it protects::

    BEGIN
    claim     INSERT INTO idempotency_keys (...) ON CONFLICT (scope, key) DO NOTHING RETURNING id
              -- a row back: Claimed. Do the work here, in this transaction, then
    complete  UPDATE idempotency_keys SET response_* WHERE id = :claim
    COMMIT    -- the work and its stored answer become visible together, or neither does

              -- no row back: the key is held by a committed row; read it and decide:
              --   another request hash       -> Mismatch   (the caller answers 422)
              --   response stored            -> Replay     (the stored response)
              --   expired                    -> one UPDATE ... WHERE expires_at <= now
              --                                 replaces it; whoever's UPDATE matches wins

Why one transaction is the whole guarantee: a crash (``kill -9``, a lost connection, a
failed commit) at any instant leaves either nothing, and the retry runs the work once, or
both the work and its answer, and the retry replays the answer. A claim committed apart
from its work would leave, after a crash between the two commits, a key with no answer
beside work that happened: no retry can then tell whether to run the work again.

Concurrent duplicates never see an uncommitted claim, so they wait on the database, not
on a poll loop. On PostgreSQL the duplicate's INSERT waits on the first transaction's
uncommitted index entry: the first commits, the INSERT finds the conflict and the read
finds the stored answer (Replay); the first rolls back, the INSERT claims the key. ``wait``
bounds that wait (``lock_timeout``); past it the outcome is :class:`InProgress`. On
SQLite, ``BEGIN IMMEDIATE`` already serialises writers: the duplicate's transaction starts
after the first one has ended (bounded by the busy timeout). Any number of processes can
share the keys: the database is the only arbiter.

A committed row without a response is written only by a caller that commits its claim
before its work (another application using this module that way, or a process of an
older noclash during a rolling upgrade). Such a row is :class:`InProgress` until ``lease``
has passed, then taken over like an expired one, as that caller expects.

The module knows nothing of HTTP or chat: a "response" is a status, headers and bytes,
and the table is the caller's, with these columns (noclash's is ``idempotency_keys``)::

    id (uuid, primary key), scope, key (UNIQUE (scope, key)), method, path, request_hash,
    response_status (NULL until completed), response_headers (JSON), response_body (bytes),
    created_at, expires_at (timezone-aware timestamps)

Text columns may be ``Text`` or ``String`` of any length (a length, where declared, bounds
``scope`` and ``path``); a ``DateTime(timezone=True)`` read back naive, as SQLite returns
it, is taken as the UTC this module wrote.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from noclash.db.dialects import dialect_for
from noclash.db.types import utcnow
from noclash.unique.errors import UniqueError
from noclash.unique.ids import uuid7

MAX_KEY_LENGTH = 255
DEFAULT_LEASE = timedelta(minutes=5)
# Replacing an expired row can lose to another replacer; then look again.
_ATTEMPTS = 5


class InvalidIdempotencyKey(UniqueError, ValueError):
    """The key is empty, too long or not printable ASCII (RFC 9110 field value rules).

    A :class:`UniqueError`, so ``except UniqueError`` catches everything this package
    raises about data; still a ``ValueError``, as it always was."""


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Claimed:
    """This transaction holds the key: do the work, :func:`complete`, then commit."""

    claim_id: UUID


@dataclass(frozen=True)
class Replay:
    """The first request committed; answer with its stored response."""

    response: StoredResponse


@dataclass(frozen=True)
class InProgress:
    """Another transaction still holds the key after ``wait`` (``started_at`` is None), or
    a claim committed without its work is younger than the lease."""

    started_at: datetime | None


@dataclass(frozen=True)
class Mismatch:
    """The key was used for a different request (other method, path or body)."""

    method: str
    path: str


Outcome = Claimed | Replay | InProgress | Mismatch


def _utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime.

    The caller's table may declare its timestamps ``DateTime(timezone=True)``: SQLite then
    stores the UTC wall-clock time this module binds without its offset and hands back a
    naive datetime, which Python refuses to compare with an aware ``now`` (a TypeError on
    every retry of a stored key). A naive value read back is therefore UTC; a ``now`` in
    another zone is moved to UTC before it is bound, so SQLite's text compares right.
    """
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_key(key: str) -> str:
    """``key`` if it is usable; :class:`InvalidIdempotencyKey` otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise InvalidIdempotencyKey(
            f"an idempotency key is 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def request_hash(method: str, path: str, body: bytes) -> str:
    """sha256 of the request. A JSON body is canonicalised first (key order, whitespace),
    so a client that re-serialises the same document on retry is not told it changed.

    A body nested too deep for the parser is hashed as its bytes (an application should
    refuse it before: noclash's body limit does).
    """
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
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
    wait: timedelta | None = None,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
) -> Outcome:
    """Try to take ``(scope, key)`` in the caller's transaction; say what the caller must do.

    After :class:`Claimed`, do the work and :func:`complete` in this same transaction,
    then commit; on any failure roll back, which frees the key at once. Any other outcome
    wrote nothing: roll back (after an :class:`InProgress` from a timed-out wait,
    PostgreSQL accepts nothing else). ``wait`` bounds how long a concurrent holder of the
    key is waited for (None: as long as the database's own lock timeout says).
    """
    check_key(key)
    for column, value in (("scope", scope), ("path", path)):
        # A Text column (or String without a length) has no limit to check against.
        limit = getattr(table.c[column].type, "length", None)
        if not value or (limit is not None and len(value) > limit):
            raise ValueError(f"{column} must be 1 to {limit or 'any number of'} characters")
    now = _utc(now or utcnow())
    dialect = dialect_for(conn)
    fresh = {
        "method": method.upper(),
        "path": path,
        "request_hash": request_hash,
        "response_status": None,
        "response_headers": None,
        "response_body": None,
        "created_at": now,
        "expires_at": now + ttl,
    }
    where_key = sa.and_(table.c.scope == scope, table.c.key == key)
    if wait is not None:
        dialect.limit_lock_wait(conn, wait.total_seconds())
    try:
        outcome = _claim(conn, table, dialect, scope, key, fresh, where_key, now, lease)
    except DBAPIError as exc:
        if dialect.is_lock_timeout(exc.orig):
            return InProgress(None)
        raise
    if wait is not None and isinstance(outcome, Claimed):
        dialect.limit_lock_wait(conn, None)  # the work's own waits are not bounded by ours
    return outcome


def _claim(
    conn: Connection,
    table: Table,
    dialect: Any,
    scope: str,
    key: str,
    fresh: dict[str, Any],
    where_key: Any,
    now: datetime,
    lease: timedelta,
) -> Outcome:
    for _ in range(_ATTEMPTS):
        claim_id = uuid7()
        inserted = conn.execute(
            dialect.insert(table)
            .values(id=claim_id, scope=scope, key=key, **fresh)
            .on_conflict_do_nothing(index_elements=["scope", "key"])
            .returning(table.c.id)
        ).first()
        if inserted is not None:
            return Claimed(claim_id)
        row = conn.execute(sa.select(table).where(where_key)).first()
        if row is None:  # purged between our INSERT and this read: try again
            continue
        created_at, expires_at = _utc(row.created_at), _utc(row.expires_at)
        stale = row.response_status is None and created_at <= now - lease
        if expires_at <= now or stale:
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
        if row.request_hash != fresh["request_hash"]:
            return Mismatch(row.method, row.path)
        if row.response_status is None:
            return InProgress(created_at)
        return _replay(row)
    # Every attempt lost a race to a replacer or a purge: report it as in progress, the
    # caller's answer (409, retry later) is right for a key that busy.
    return InProgress(now)


def complete(conn: Connection, table: Table, claim_id: UUID, response: StoredResponse) -> bool:
    """Store the response of the claimed request, in the claim's transaction.

    False if the claim is gone (a lease takeover by another caller, which only a claim
    committed before its work can suffer).
    """
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


def peek(
    conn: Connection,
    table: Table,
    *,
    scope: str,
    key: str,
    request_hash: str,
    now: datetime | None = None,
) -> Replay | Mismatch | None:
    """What :func:`claim` would answer at once for a key already answered, read without
    writing or locking anything: the stored answer (:class:`Replay`), or
    :class:`Mismatch` when it answered another request. None: no answer is stored (no
    row, an expired one, or one in progress), and the caller must claim.

    A shortcut, never the guarantee: only :func:`claim` decides, under the database's
    lock, and a key answered between this read and the claim is replayed by the claim.
    Why it exists: a request with slow work to do before it touches the database (asking
    another service whether a credential is the caller's) must not repeat that work, nor
    fail when the service is down, when its answer is already stored.
    """
    row = lookup(conn, table, scope=scope, key=key)
    if row is None or row.response_status is None:
        return None
    if _utc(row.expires_at) <= _utc(now or utcnow()):
        return None
    if row.request_hash != request_hash:
        return Mismatch(row.method, row.path)
    return _replay(row)


def _replay(row: Any) -> Replay:
    headers = [(str(k), str(v)) for k, v in (row.response_headers or [])]
    return Replay(StoredResponse(row.response_status, headers, bytes(row.response_body)))


def lookup(conn: Connection, table: Table, *, scope: str, key: str) -> Any:
    """The stored row for ``(scope, key)``, or None (for tests and the docs)."""
    return conn.execute(sa.select(table).where(table.c.scope == scope, table.c.key == key)).first()


def purge_expired(
    conn: Connection, table: Table, *, now: datetime | None = None, limit: int = 1000
) -> int:
    """Delete up to ``limit`` expired keys (expired ones are also replaced on reuse)."""
    now = _utc(now or utcnow())
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
    "peek",
    "purge_expired",
    "request_hash",
]
