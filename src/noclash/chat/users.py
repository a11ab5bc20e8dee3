"""Users and their API tokens (stored hashed; shown once).

A token is a credential, so the database keeps only its sha256 (``uq_users_token_hash``)
and the CLI prints it once. A lost token cannot be shown again; it is replaced:
:func:`rotate_token` stores the hash of a new one, and :func:`revoke_token` stores the hash
of a value nobody was shown (so no token matches) and marks ``token_revoked_at``. Both are a
single conditional UPDATE, so two operators rotating at once leave exactly one valid token.
Processes remember a verified token for ``NOCLASH_AUTH_CACHE_SECONDS`` (see
:class:`TokenCache`): a revocation takes effect everywhere within that time.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from noclash.chat.text import WHITESPACE
from noclash.db.engine import read_only
from noclash.db.tables import max_length, users
from noclash.db.types import utcnow
from noclash.unique import insert_or_get, translating, uuid7
from noclash.unique.ids import new_api_token, token_hash

ADMIN_EMAIL = "admin@localhost"
# Something, an @, something, with no whitespace (nor a BOM, nor NUL) inside; whitespace
# around it is stripped. The API publishes this pattern in its OpenAPI document, so it is
# written to mean the same in every regex dialect (noclash.chat.text).
_PART = rf"[^@{WHITESPACE}\ufeff\x00]+"
EMAIL_PATTERN = rf"^[{WHITESPACE}]*{_PART}@{_PART}[{WHITESPACE}]*$"
_EMAIL = re.compile(EMAIL_PATTERN)
_EMAIL_LENGTH = max_length(users.c.email)


class InvalidEmail(ValueError):
    pass


@dataclass(frozen=True)
class User:
    id: UUID
    email: str
    is_admin: bool


@dataclass(frozen=True)
class Account:
    """A user as an operator sees it (``noclash user list``); never the token."""

    id: UUID
    email: str
    is_admin: bool
    created_at: datetime
    token_revoked_at: datetime | None


class UnknownUser(LookupError):
    """No user has this e-mail address."""


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > _EMAIL_LENGTH:
        raise InvalidEmail(f"not an e-mail address: {email!r}")
    return email


def _values(email: str, token: str, is_admin: bool) -> dict:
    return {
        "id": uuid7(),
        "email": email,
        "token_hash": token_hash(token),
        "is_admin": is_admin,
        "created_at": utcnow(),
    }


def _account(row: sa.Row[Any]) -> Account:
    return Account(row.id, row.email, row.is_admin, row.created_at, row.token_revoked_at)


_ACCOUNT_COLUMNS = (
    users.c.id, users.c.email, users.c.is_admin, users.c.created_at, users.c.token_revoked_at,
)  # fmt: skip


def add_user(conn: Connection, email: str, *, is_admin: bool = False) -> tuple[Account, str]:
    """Insert a user in the caller's transaction; return it with its API token (shown once).

    A taken e-mail raises UniqueViolation (the unique index decides; no SELECT first).
    """
    email = normalise_email(email)
    token = new_api_token()
    with translating(users.metadata):
        row = conn.execute(
            sa.insert(users).values(_values(email, token, is_admin)).returning(*_ACCOUNT_COLUMNS)
        ).one()
    return _account(row), token


def create_user(engine: Engine, email: str, *, is_admin: bool = False) -> tuple[User, str]:
    """Create a user; return it with its API token. A taken e-mail raises UniqueViolation."""
    with engine.begin() as conn:
        account, token = add_user(conn, email, is_admin=is_admin)
    return User(account.id, account.email, account.is_admin), token


def bootstrap_admin(engine: Engine) -> tuple[str, str] | None:
    """On an empty database, create the local admin; return (email, token) if this call did.

    Two processes starting at once both try; the unique e-mail decides, and only the
    winner gets (and prints) a token.
    """
    with engine.begin() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one():
            return None
        token = new_api_token()
        _row, created = insert_or_get(
            conn, users, _values(ADMIN_EMAIL, token, True), key="uq_users_email"
        )
    return (ADMIN_EMAIL, token) if created else None


def accounts(
    conn: Connection, *, after: UUID | None = None, limit: int | None = None
) -> list[Account]:
    """Users oldest first (ids are UUIDv7), from ``after`` on: a keyset page."""
    query = sa.select(*_ACCOUNT_COLUMNS).order_by(users.c.id)
    if after is not None:
        query = query.where(users.c.id > after)
    if limit is not None:
        query = query.limit(limit)
    return [_account(row) for row in conn.execute(query)]


def list_users(engine: Engine) -> list[Account]:
    """Every user, oldest first (ids are UUIDv7)."""
    with read_only(engine).connect() as conn:
        return accounts(conn)


def replace_token(
    conn: Connection, *, user_id: UUID | None = None, email: str | None = None, revoke: bool
) -> tuple[Account, str]:
    """Store the hash of a new token for the user with ``user_id`` (or ``email``); return
    the account and the token (a value nobody is shown when ``revoke``).

    One conditional UPDATE: two operators rotating at once leave exactly one valid token.
    """
    if (user_id is None) == (email is None):
        raise ValueError("give user_id or email")
    if email is not None:
        email = normalise_email(email)
        which = users.c.email == email
    else:
        which = users.c.id == user_id
    token = new_api_token()
    with translating(users.metadata):
        row = conn.execute(
            sa.update(users)
            .where(which)
            .values(token_hash=token_hash(token), token_revoked_at=utcnow() if revoke else None)
            .returning(*_ACCOUNT_COLUMNS)
        ).first()
    if row is None:
        raise UnknownUser(f"no user has the e-mail {email}" if email else f"no user {user_id}")
    return _account(row), token


def rotate_token(engine: Engine, email: str) -> str:
    """Give ``email`` a new API token (the old one stops working); return it, once."""
    with engine.begin() as conn:
        return replace_token(conn, email=email, revoke=False)[1]


def revoke_token(engine: Engine, email: str) -> None:
    """Make ``email``'s token stop working; :func:`rotate_token` issues a new one."""
    with engine.begin() as conn:
        replace_token(conn, email=email, revoke=True)


_BY_TOKEN_HASH = sa.select(users.c.id, users.c.email, users.c.is_admin).where(
    users.c.token_hash == sa.bindparam("token_hash"), users.c.token_revoked_at.is_(None)
)


class TokenCache:
    """Recently verified tokens, per process, for a few seconds.

    Authentication runs on every request; remembering a verified token briefly saves a
    pool checkout and a query per request. It decides nothing about uniqueness and holds
    only successful lookups (keyed by the token's hash), so an unknown token always goes
    to the database. Entries expire after ``ttl`` seconds.

    A lookup runs in a thread while the process may revoke the same token: a read taken
    before the revoke committed must not be cached after :meth:`forget` ran, or the
    revoked token would work here for another ``ttl``. So a caller takes
    :attr:`generation` before its lookup and passes it to :meth:`put`, which drops the
    entry when anything was forgotten meanwhile.
    """

    def __init__(self, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, User]] = {}
        self.generation = 0  # how many times forget() ran

    def get(self, digest: str) -> User | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, user: User, generation: int) -> None:
        """Remember ``user`` for ``digest``, read by a lookup that began at
        ``generation`` (nothing is remembered if a token was forgotten since)."""
        if generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl, user)

    def forget(self, user_id: UUID) -> None:
        """Drop ``user_id``'s entries: a token this process revoked or replaced stops
        working here at once (other processes forget it within ``ttl``), and no lookup
        that began before now may put it back."""
        self.generation += 1
        for digest, (_expires, user) in list(self._entries.items()):
            if user.id == user_id:
                self._entries.pop(digest, None)


def lookup_token(engine: Engine, digest: str) -> User | None:
    """The user whose stored token hash is ``digest``, read from the database."""
    with read_only(engine).connect() as conn:
        row = conn.execute(_BY_TOKEN_HASH, {"token_hash": digest}).first()
    return User(row.id, row.email, row.is_admin) if row else None


def authenticate(engine: Engine, token: str) -> User | None:
    """The user holding ``token``, or None."""
    return lookup_token(engine, token_hash(token))
