"""Estimating how strong a column of random tokens is, from a sample of its values.

Seeds 000 and 001: a 6-8 character token with a unique index fails with "duplicate key" as
soon as the table is large enough, because of the birthday bound, not bad luck. From a
sample we estimate the alphabet (which character classes occur) and the length, hence the
number of possible tokens ``N = alphabet ** length``, and the probability that ``n`` random
tokens contain a collision: ``1 - exp(-n(n-1) / 2N)``.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from noclash.doctor.context import Context
from noclash.doctor.dialects import is_uuid_text
from noclash.doctor.intent import declared_alone, may_hold_random_tokens

MIN_SAMPLE = 20
MIN_LENGTH = 4
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
_HEX = frozenset("0123456789abcdef")
_UUID4_BITS = 122.0
_CLASSES = (
    (frozenset(string.digits), 10),
    (frozenset(string.ascii_lowercase), 26),
    (frozenset(string.ascii_uppercase), 26),
    (frozenset("-_"), 2),
)


@dataclass(frozen=True)
class TokenEstimate:
    alphabet: int
    length: int
    bits: float
    sampled: int

    def collision_probability(self, rows: int) -> float:
        return birthday(rows, self.bits)


def birthday(n: int, bits: float) -> float:
    """Probability that ``n`` uniform draws from ``2**bits`` values hold a repeat."""
    if n < 2:
        return 0.0
    exponent = n * (n - 1) / 2 * math.pow(2.0, -bits) if bits < 1000 else 0.0
    return -math.expm1(-exponent)


def estimate(values: Iterable[str]) -> TokenEstimate | None:
    """A strength estimate when the values look like random tokens, else ``None``.

    "Look random" means: token characters only, (nearly) one length, at least
    :data:`MIN_LENGTH` long, and at least :data:`MIN_SAMPLE` values to judge from. Words,
    e-mails and slugs fail the length or the character test.
    """
    sample = [v for v in values if isinstance(v, str)]
    if len(sample) < MIN_SAMPLE:
        return None
    if sum(is_uuid_text(v) for v in sample) >= 0.95 * len(sample):
        return TokenEstimate(alphabet=16, length=32, bits=_UUID4_BITS, sampled=len(sample))
    lengths = Counter(len(v) for v in sample)
    length, most = lengths.most_common(1)[0]
    if length < MIN_LENGTH or most < 0.9 * len(sample) or max(lengths) - min(lengths) > 2:
        return None
    chars = set().union(*(set(v) for v in sample))
    if not chars <= _TOKEN_CHARS:
        return None
    # Words of one length (country codes, enum labels) repeat characters in patterns and
    # use few distinct values per position; tokens use many. Require real variety.
    if len(set(sample)) < 0.9 * len(sample) or len(chars) < 8:
        return None
    # Positions where one character dominates (a "tok_" prefix, a "-" separator, a
    # counter's leading digits) carry no randomness: they do not count toward the length.
    same_length = [v for v in sample if len(v) == length]
    random_positions = sum(
        Counter(v[i] for v in same_length).most_common(1)[0][1] <= 0.5 * len(same_length)
        for i in range(length)
    )
    if random_positions < MIN_LENGTH:
        return None
    sample = same_length
    chars = set().union(*(set(v) for v in sample))
    if chars <= _HEX and length >= 8:
        alphabet = 16
    else:
        # A class counts when a real share of values uses it: a generator drawing from it
        # puts it in most values, while one odd value (a hand-edited token) should not
        # double the estimated alphabet.
        alphabet = 0
        for cls, size in _CLASSES:
            if sum(bool(set(v) & cls) for v in sample) >= 0.1 * len(sample):
                alphabet += size
        alphabet = max(alphabet, 2)
    return TokenEstimate(
        alphabet=alphabet,
        length=random_positions,
        bits=random_positions * math.log2(alphabet),
        sampled=len(sample),
    )


def mask(value: str) -> str:
    """Tokens are often secrets: show only enough to recognise one."""
    return value[:2] + "…" if len(value) > 2 else "…"


def masked_examples(ctx: Context, table: str, column: str, where: str) -> list[str]:
    """The first three values of ``table.column`` matching ``where``, masked: what a finding
    shows of a column that may hold secrets."""
    q = ctx.q(column)
    rows = ctx.rows(
        f"SELECT {q} FROM {ctx.t(table)} WHERE {where} ORDER BY {q} LIMIT 3", what=table
    )
    return [mask(r[0]) for r in rows]


def declared_token_columns(ctx: Context) -> list[tuple[str, str]]:
    """Text columns declared unique on their own (an index or ``--key``): where a random
    token that collides is a failed insert. Shared by ``weak-tokens`` and
    ``uuid-castability`` (whose fix for weak tokens is the move to uuid)."""

    def compute() -> list[tuple[str, str]]:
        out = []
        for tname, table in ctx.catalog.tables.items():
            for col in table.columns.values():
                if not may_hold_random_tokens(col):
                    continue
                if declared_alone(tname, table, col.name, ctx.options.keys):
                    out.append((tname, col.name))
        return out

    return ctx.memo("token-columns", compute)


def analyse(ctx: Context, table: str, column: str) -> TokenEstimate | None:
    """The token estimate of ``table.column`` from a sample (memoised)."""

    def compute() -> TokenEstimate | None:
        ctx.step(f"sampling {table}.{column}")
        q = ctx.q(column)
        rows = ctx.rows(
            f"SELECT {q} FROM {ctx.t(table)} WHERE {q} IS NOT NULL LIMIT {ctx.options.sample_size}",
            what=table,
        )
        return estimate(r[0] for r in rows)

    return ctx.memo(("token", table, column), compute)


def weak(ctx: Context, table: str, column: str) -> TokenEstimate | None:
    """The estimate when ``table.column`` is a weak token column, else ``None``."""
    est = analyse(ctx, table, column)
    if est is None:
        return None
    later = est.collision_probability(ctx.row_count(table) * ctx.options.growth)
    return est if later > ctx.options.token_threshold else None
