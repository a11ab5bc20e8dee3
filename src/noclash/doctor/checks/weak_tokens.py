"""Unique text columns of random tokens short enough to collide by the birthday bound.

Seeds 000/001: 6-8 character public tokens under a unique index; at a few thousand rows
inserts start failing with "duplicate key value violates unique constraint".

Precision: the column is declared unique (an index on it alone, or ``--key``); that its
values are random tokens is estimated from a sample (token characters, one length, no
dominant character per position), so words, e-mails and slugs are not flagged. A secret
or credential is reported but not repaired automatically: rotating it is the owner's call;
nor is a column too short for a UUID (``varchar(8)``) or one a foreign key references.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from noclash.doctor import fixes
from noclash.doctor.context import Context
from noclash.doctor.intent import never_a_key
from noclash.doctor.model import Evidence, Finding, Fix, Severity
from noclash.doctor.tokens import declared_token_columns, masked_examples, weak

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


@dataclass(frozen=True)
class WeakTokensEvidence(Evidence):
    alphabet: int
    bits: float
    examples: list[str]
    growth: int
    length: int
    p_collision_later: float
    p_collision_now: float
    rows: int
    sampled: int
    threshold: float


def run(ctx: Context) -> Iterator[Finding]:
    for tname, cname in declared_token_columns(ctx):
        est = weak(ctx, tname, cname)
        if est is None:
            continue
        rows = ctx.row_count(tname)
        growth = ctx.options.growth
        p_now = est.collision_probability(rows)
        p_later = est.collision_probability(rows * growth)
        examples = masked_examples(ctx, tname, cname, f"{ctx.q(cname)} IS NOT NULL")
        secret = never_a_key(ctx.catalog.tables[tname].columns[cname]) == "secret"
        blocker = fixes.token_migration_blocker(ctx, tname, cname)
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
                f"{f'; {blocker}' if blocker else ''}"
            ),
            evidence=WeakTokensEvidence(
                alphabet=est.alphabet,
                bits=round(est.bits, 1),
                examples=examples,
                growth=growth,
                length=est.length,
                p_collision_later=float(f"{p_later:.3g}"),
                p_collision_now=float(f"{p_now:.3g}"),
                rows=rows,
                sampled=est.sampled,
                threshold=ctx.options.token_threshold,
            ),
            fix=Fix(
                statements=fixes.statements(fixes.migrate_weak_tokens(ctx, tname, cname)),
                repair=None if secret or blocker else "migrate-weak-tokens",
                idiom=ctx.idiom(),
            ),
        )


__all__ = ["HELP", "ID", "TITLE", "WeakTokensEvidence", "run"]
