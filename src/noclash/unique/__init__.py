"""Uniqueness primitives for any SQLAlchemy 2 application (SQLite and PostgreSQL).

- :func:`insert_or_get`: claim-or-create on a declared unique key, partial indexes included.
- :func:`translate` / :func:`translating`: driver errors to :class:`UniqueViolation`.
- :func:`uuid7`, :func:`uuid4`, :func:`parse_uuid`: identifiers with enough entropy.

This package knows nothing of chat; noclash's domain code is built on it.
"""

from noclash.unique.claim import insert_or_get
from noclash.unique.errors import ClaimNotSettled, UniqueError, UniqueViolation
from noclash.unique.ids import parse_uuid, uuid4, uuid7
from noclash.unique.keys import KeyRef, UniqueKey, find_key, unique_keys
from noclash.unique.translate import translate, translating

__all__ = [
    "ClaimNotSettled",
    "KeyRef",
    "UniqueError",
    "UniqueKey",
    "UniqueViolation",
    "find_key",
    "insert_or_get",
    "parse_uuid",
    "translate",
    "translating",
    "unique_keys",
    "uuid4",
    "uuid7",
]
