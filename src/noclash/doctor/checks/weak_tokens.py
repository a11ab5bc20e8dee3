"""Unique text columns of random tokens short enough to collide by the birthday bound.

Seeds 000/001: 6-8 character public tokens under a unique index; at a few thousand rows
inserts start failing with "duplicate key value violates unique constraint".
"""

from __future__ import annotations

from collections.abc import Iterator

from noclash.doctor.context import Context
from noclash.doctor.intent import looks_like_key, may_hold_random_tokens
from noclash.doctor.model import Finding, Fix, Severity
from noclash.doctor.tokens import TokenEstimate, estimate, mask

ID = "weak-tokens"
TITLE = "Random tokens too short for the table's size"
HELP = (
    "Generate UUIDv4 (122 random bits) for new rows and keep the old values in a legacy "
    "column so published links still resolve: `noclash repair` does both."
)
LINKS = (
    ("Birthday problem", "https://en.wikipedia.org/wiki/Birthday_problem"),
    ("RFC 9562 (UUIDv4)", "https://www.rfc-editor.org/rfc/rfc9562"),
    ("repair: migrate-weak-tokens", "repair.md#migrate-weak-tokens"),
)
# Fixture (noclash.doctor.fixtures) whose report is shown on the docs page.
EXAMPLE = "short-tokens"


def candidates(ctx: Context) -> list[tuple[str, str]]:
    """Text columns that are unique on their own, or named like a token."""
    out = []
    for tname, table in ctx.catalog.tables.items():
        for col in table.columns.values():
            if not may_hold_random_tokens(col):
                continue
            unique = table.has_unique_on((col.name,), whole_table=False)
            if unique or looks_like_key(col):
                out.append((tname, col.name))
    return out


def analyse(ctx: Context, table: str, column: str) -> TokenEstimate | None:
    """The token estimate of ``table.column`` (shared with ``uuid-castability``)."""

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


def run(ctx: Context) -> Iterator[Finding]:
    for tname, cname in candidates(ctx):
        est = weak(ctx, tname, cname)
        if est is None:
            continue
        rows = ctx.row_count(tname)
        growth = ctx.options.growth
        p_now = est.collision_probability(rows)
        p_later = est.collision_probability(rows * growth)
        q = ctx.q(cname)
        examples = [
            mask(r[0])
            for r in ctx.rows(
                f"SELECT {q} FROM {ctx.t(tname)} WHERE {q} IS NOT NULL ORDER BY {q} LIMIT 3",
                what=tname,
            )
        ]
        yield Finding(
            check=ID,
            severity=Severity.ERROR,
            table=tname,
            columns=(cname,),
            message=(
                f"{tname}.{cname} holds random tokens of ~{est.bits:.0f} bits "
                f"({est.length} random chars from {est.alphabet} symbols): by the birthday "
                f"bound, {rows} tokens collide with probability {p_now:.2g} and "
                f"{rows * growth} with {p_later:.2g}, and each collision is a failed insert"
            ),
            evidence={
                "alphabet": est.alphabet,
                "bits": round(est.bits, 1),
                "examples": examples,
                "growth": growth,
                "length": est.length,
                "p_collision_later": float(f"{p_later:.3g}"),
                "p_collision_now": float(f"{p_now:.3g}"),
                "rows": rows,
                "sampled": est.sampled,
                "threshold": ctx.options.token_threshold,
            },
            fix=Fix(
                sql=(
                    f"ALTER TABLE {ctx.t(tname)} ADD COLUMN {ctx.q(cname + '_legacy')} TEXT; "
                    f"-- copy, then give every row a UUIDv4 (see `noclash repair`)"
                ),
                repair="migrate-weak-tokens",
            ),
        )
