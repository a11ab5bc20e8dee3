"""Which columns a schema *declares* to be keys, which names only *suggest* one, and which
columns hold a lifecycle.

A column is a key when the schema says so: a primary key, a unique constraint or index
(whole-table or partial), or ``--key table.column[,column...]`` from someone who knows the
application. Only those findings are errors and only those get automatic repairs.

A name is a guess. ``embed_token`` or ``slug`` without a unique index may be a key the
application forgot to declare (seed 004's dropped index), or a value it never looks up:
such a column only ever gets a *note* suggesting a review, never an error or a repair.
Secrets and credentials (``accessToken``, ``access_token_encrypted``), URLs (``tokenUrl``)
and free text are never keys, whatever their name contains: an OAuth access token is NULL
until an account connects and two providers may share one token URL, so making either
unique or NOT NULL breaks the application. Every rule here is listed in
``docs/doctor/index.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from noclash.doctor.catalog import Catalog, Column, Table

# Column names (snake_cased) that applications use as unique public keys.
_KEY_NAME = re.compile(r"(^|_)(token|slug|session_id|public_id|uuid|guid)($|_)")
# Secrets stored hashed are unique but not looked up by value from outside: never
# "random tokens" that could be weak or cast to uuid.
_HASHED = re.compile(r"(^|_)(hash|hashed|digest|sha\d*|md5)($|_)")
# Secrets and credentials: values issued by someone else (an OAuth provider) or kept
# secret; NULL is a real state ("not connected"), and they are never looked up as keys.
_SECRET = re.compile(
    r"(^|_)(password|passwd|secret|secrets|credential|credentials|private_key|api_key|apikey"
    r"|access|refresh|bearer|oauth|encrypted|cipher|ciphertext|salt|otp|totp|csrf"
    r"|session_token|id_token|auth_token|reset_token|verification_token"
    r"|confirmation_token)($|_)"
)
# URLs and endpoints: configuration, shared freely between rows.
_URL = re.compile(r"(^|_)(url|uri|urls|href|link|endpoint|webhook|callback|redirect)($|_)")
# Free text and documents.
_FREE_TEXT = re.compile(
    r"(^|_)(text|body|content|description|message|note|notes|comment|summary|bio|html"
    r"|markdown|payload|metadata|settings|config|json)($|_)"
)
_DOCUMENT_TYPES = re.compile(r"json|xml|bytea|blob|tsvector|array|\[\]", re.I)
# Columns whose name says "this holds uuids" (or ids an application mints as uuids).
_UUID_NAME = re.compile(r"(^|_)(uuid|guid|session_id|public_id)($|_)")
# A column renamed ``*_legacy`` by ``noclash repair`` keeps old values resolving; no new
# value is ever generated into it, so its collision risk no longer grows.
_LEGACY = re.compile(r"_legacy$")
# Lifecycle ("state machine") columns, and the words that mean "this row is finished".
LIFECYCLE_NAMES = frozenset({"status", "state", "lifecycle", "stage"})
CLOSED_WORDS = frozenset(
    {
        "closed",
        "archived",
        "resolved",
        "done",
        "ended",
        "expired",
        "cancelled",
        "canceled",
        "deleted",
        "inactive",
        "completed",
        "finished",
        "revoked",
        "removed",
    }
)
# Columns that identify the row itself (a slug, a token, an e-mail): a unique index on
# them is meant for every row, closed or not, unlike a key of the *counterpart* (psid).
_OWN_IDENTIFIER = re.compile(
    r"(^|_)(id|slug|token|email|name|code|key|number|uuid|guid|hash|handle|username)$"
)


def snake(name: str) -> str:
    """``instagramConnectionId`` -> ``instagram_connection_id``."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return s.replace("-", "_").lower()


def is_legacy(column: str) -> bool:
    return bool(_LEGACY.search(snake(column)))


def never_a_key(column: Column) -> str | None:
    """Why ``column`` is never treated as a key by its name: "secret", "url", "free text"
    or "document"; ``None`` when nothing rules it out."""
    name = snake(column.name)
    if _SECRET.search(name) or _HASHED.search(name):
        return "secret"
    if _URL.search(name):
        return "url"
    if _FREE_TEXT.search(name):
        return "free text"
    if _DOCUMENT_TYPES.search(column.type):
        return "document"
    return None


def looks_like_key(column: Column) -> bool:
    """A text or uuid column whose name suggests a key (token, slug, session id): a guess,
    worth a note and nothing more."""
    name = snake(column.name)
    if is_legacy(name) or not (column.is_text or column.is_uuid):
        return False
    return bool(_KEY_NAME.search(name)) and never_a_key(column) is None


def may_hold_random_tokens(column: Column) -> bool:
    return column.is_text and not is_legacy(column.name) and not _HASHED.search(snake(column.name))


def names_uuid(column: Column) -> bool:
    return bool(_UUID_NAME.search(snake(column.name))) and never_a_key(column) is None


def is_own_identifier(column: str) -> bool:
    """Whether ``column`` identifies the row itself; ``token_legacy`` (the old values
    ``migrate-weak-tokens`` keeps resolving) is as much the row's own as ``token``."""
    name = _LEGACY.sub("", snake(column))
    return name == "id" or (bool(_OWN_IDENTIFIER.search(name)) and not name.endswith("_id"))


def is_closed_state(value: str) -> bool:
    return value.strip().lower() in CLOSED_WORDS


def is_slug(column: str) -> bool:
    return "slug" in snake(column)


@dataclass(frozen=True)
class KeySpec:
    """A unique key the application wants: ``table`` and its ``columns``.

    ``reason`` is ``--key`` (stated by a person: certain) or ``name`` (a guess).
    """

    table: str
    columns: tuple[str, ...]
    reason: str = "--key"

    @property
    def declared(self) -> bool:
        return self.reason != "name"

    @classmethod
    def parse(cls, text: str) -> KeySpec:
        """``table.column`` or ``table.col1,col2`` (``schema.table.column`` works too)."""
        table, sep, cols = text.rpartition(".")
        columns = tuple(c.strip() for c in cols.split(",") if c.strip())
        if not sep or not table or not columns:
            raise ValueError(f"--key wants table.column[,column...], not {text!r}")
        return cls(table=table, columns=columns)


def stated_keys(catalog: Catalog, explicit: tuple[KeySpec, ...]) -> list[KeySpec]:
    """The ``--key`` specs that name existing tables and columns, without repeats."""
    out: list[KeySpec] = []
    for spec in explicit:
        table = catalog.table(spec.table)
        if table is None or not set(spec.columns) <= set(table.columns) or spec in out:
            continue
        out.append(spec)
    return out


def declared_alone(
    table_name: str, table: Table, column: str, explicit: tuple[KeySpec, ...]
) -> bool:
    """Whether ``column`` is declared a key on its own: a unique index on it alone (partial
    ones included) or ``--key table.column``. A column that is only part of a composite key
    may repeat a value freely: two of its values colliding matters only when it is alone."""
    return bool(table.single_column_uniques(column)) or any(
        spec.table == table_name and spec.columns == (column,) for spec in explicit
    )


def named_keys(catalog: Catalog, explicit: tuple[KeySpec, ...]) -> list[KeySpec]:
    """Single columns whose names suggest a key that nothing declares.

    A column counts only when no unique index already includes it (a composite
    ``(chatbot_id, slug)`` unique is the application's statement of intent) and no
    ``--key`` names it.
    """
    stated = {(k.table, c) for k in explicit for c in k.columns}
    out: list[KeySpec] = []
    for tname, table in catalog.tables.items():
        for col in table.columns.values():
            if col.primary_key or not looks_like_key(col) or (tname, col.name) in stated:
                continue
            if table.covered_by_unique(col.name):
                continue
            out.append(KeySpec(tname, (col.name,), reason="name"))
    return out


def lifecycle_column(table: Table) -> Column | None:
    for col in table.columns.values():
        if snake(col.name) in LIFECYCLE_NAMES and (col.is_text or col.name in table.enum_values):
            return col
    return None
