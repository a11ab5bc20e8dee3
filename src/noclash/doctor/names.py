"""Names the doctor gives the objects it creates (indexes, triggers, constraints).

PostgreSQL truncates identifiers longer than 63 bytes (``NAMEDATALEN - 1``) silently, so
two long names that share their first 63 bytes become the same name and the second
``CREATE INDEX IF NOT EXISTS`` quietly does nothing. Every generated name goes through
:func:`identifier`: it is the plain name when that fits, else a prefix plus a hash of the
whole name, so it is valid, deterministic (a second run finds the same object) and distinct
for distinct inputs.
"""

from __future__ import annotations

import hashlib

MAX_IDENTIFIER_BYTES = 63
_HASH_CHARS = 8


def identifier(*parts: str, suffix: str = "") -> str:
    """``parts`` joined by ``_`` plus ``suffix``, within :data:`MAX_IDENTIFIER_BYTES`.

    A schema-qualified table name contributes only its table part. Too long: the joined
    name is cut on a character boundary and ``_<8 hex digits of its sha256>`` is added
    before ``suffix``, so the suffix (``_key``, ``_active_key``) still says what it is.
    """
    return fit("_".join(p.rsplit(".", 1)[-1] for p in parts if p), suffix)


def fit(base: str, suffix: str = "") -> str:
    """``base`` plus ``suffix`` within :data:`MAX_IDENTIFIER_BYTES`, shortened as
    :func:`identifier` does; ``base`` is taken whole (a column's name may hold a dot).

    A column the doctor adds (``<column>_legacy``) must fit as well: PostgreSQL truncated
    a long one, so the next plan looked for the whole name, did not find it, and the
    truncated column (no longer ending in ``_legacy``) was taken for weak tokens again.
    """
    full = base + suffix
    if len(full.encode()) <= MAX_IDENTIFIER_BYTES:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH_CHARS]
    room = MAX_IDENTIFIER_BYTES - len(f"_{digest}{suffix}".encode())
    head = base.encode()[:room].decode(errors="ignore")
    return f"{head}_{digest}{suffix}"


__all__ = ["MAX_IDENTIFIER_BYTES", "fit", "identifier"]
