"""Slug rules: how a title becomes a slug, and which candidates to try on a collision.

The database decides every collision: a caller tries each candidate with one INSERT (or
UPDATE) against a unique index and moves to the next only when the index says no. There
is no SELECT pre-check: a read per candidate costs a round trip each and still races, as
another writer can take the slug between the read and the write.

Candidates: the plain slug first, so it is kept whenever it is free; then the base with a
random 4-character ``[a-z0-9]`` suffix (36^4 = 1.7 million values); after repeated
collisions the suffix grows by one character, so the space grows 36-fold and allocation
always ends, even for a title used millions of times.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Iterator

from anyascii import anyascii

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
SUFFIX_LENGTH = 4
# Tries at one suffix length before the suffix grows by a character.
TRIES_PER_LENGTH = 2
MAX_BASE_LENGTH = 60
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str | None, *, max_length: int = MAX_BASE_LENGTH) -> str:
    """ASCII, lowercase, hyphenated, at most ``max_length`` characters; "" if nothing is left.

    Transliteration (``anyascii``) keeps non-Latin titles meaningful ("Привет" -> "privet");
    emoji-only or punctuation-only text gives "" so the caller can pick a fallback base.
    The cut prefers a hyphen boundary so words are not chopped in half.
    """
    if not text:
        return ""
    # Symbols (emoji included) and format characters carry no words: drop them before
    # transliterating, or anyascii would spell "🎉" as "tada".
    words = "".join(
        ch for ch in text if unicodedata.category(ch)[0] not in "SC" or ch.isspace()
    )
    slug = _NOT_SLUG.sub("-", anyascii(words).lower()).strip("-")
    if len(slug) <= max_length:
        return slug
    cut = slug[:max_length]
    if "-" in cut and slug[max_length] != "-":
        cut = cut[: cut.rindex("-")]
    return cut.strip("-")


def random_suffix(length: int = SUFFIX_LENGTH) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def slug_candidates(base: str, *, first: bool = True) -> Iterator[str]:
    """``base``, then ``base-xxxx`` with random suffixes that grow after repeated misses.

    Infinite: callers stop after the first candidate the database accepts.
    ``first=False`` skips the plain base (when it is known to be taken, e.g. on rename).
    """
    if first:
        yield base
    length = SUFFIX_LENGTH
    while True:
        for _ in range(TRIES_PER_LENGTH):
            yield f"{base}-{random_suffix(length)}"
        length += 1
