"""Which columns a schema *means* to be unique keys, and which columns hold a lifecycle.

The catalog says which indexes exist, not which ones the application wants. The seeds show
the gap: a dropped unique index on ``slug`` (seed 004), a ``sessionId`` the code treats as
a key but the database lets be NULL (seed 003). These heuristics name the usual suspects;
``--key table.column[,column...]`` states intent explicitly and always wins. Every rule
here is listed in ``docs/doctor/index.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from noclash.doctor.catalog import Catalog, Column, Table

# Column names (snake_cased) that applications use as unique public keys.
_KEY_NAME = re.compile(r"(^|_)(token|slug|session_id|public_id|uuid|guid)($|_)")
# Secrets stored hashed are unique but not looked up by value from outside: still keys,
# but never "random tokens" that could be weak or cast to uuid.
_HASHED = re.compile(r"(^|_)(hash|digest|sha\d*|md5)($|_)")
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


def looks_like_key(column: Column) -> bool:
    """A text or uuid column whose name says it is a unique key (token, slug, session id)."""
    name = snake(column.name)
    if is_legacy(name) or not (column.is_text or column.is_uuid):
        return False
    return bool(_KEY_NAME.search(name))


def may_hold_random_tokens(column: Column) -> bool:
    return column.is_text and not is_legacy(column.name) and not _HASHED.search(snake(column.name))


def names_uuid(column: Column) -> bool:
    return bool(_UUID_NAME.search(snake(column.name)))


def is_own_identifier(column: str) -> bool:
    name = snake(column)
    return name == "id" or (bool(_OWN_IDENTIFIER.search(name)) and not name.endswith("_id"))


def is_closed_state(value: str) -> bool:
    return value.strip().lower() in CLOSED_WORDS


@dataclass(frozen=True)
class KeySpec:
    """A unique key the application wants: ``table`` and its ``columns``."""

    table: str
    columns: tuple[str, ...]
    reason: str = "--key"

    @classmethod
    def parse(cls, text: str) -> KeySpec:
        """``table.column`` or ``table.col1,col2`` (``schema.table.column`` works too)."""
        table, sep, cols = text.rpartition(".")
        columns = tuple(c.strip() for c in cols.split(",") if c.strip())
        if not sep or not table or not columns:
            raise ValueError(f"--key wants table.column[,column...], not {text!r}")
        return cls(table=table, columns=columns)


def intended_keys(catalog: Catalog, explicit: tuple[KeySpec, ...]) -> list[KeySpec]:
    """Explicit keys first, then single columns whose names say "unique key".

    A named column counts only when no unique index already includes it (a composite
    ``(chatbot_id, slug)`` unique is the application's statement of intent).
    """
    out: list[KeySpec] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for spec in explicit:
        if (spec.table, spec.columns) not in seen:
            seen.add((spec.table, spec.columns))
            out.append(spec)
    for tname, table in catalog.tables.items():
        for col in table.columns.values():
            if col.primary_key or not looks_like_key(col) or _HASHED.search(snake(col.name)):
                continue
            if table.covered_by_unique(col.name) or (tname, (col.name,)) in seen:
                continue
            seen.add((tname, (col.name,)))
            out.append(KeySpec(tname, (col.name,), reason="name"))
    return out


def lifecycle_column(table: Table) -> Column | None:
    for col in table.columns.values():
        if snake(col.name) in LIFECYCLE_NAMES and (col.is_text or col.name in table.enum_values):
            return col
    return None
