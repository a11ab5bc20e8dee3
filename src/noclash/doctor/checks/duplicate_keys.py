"""Rows that share a value of a key stated with ``--key``, so its unique index cannot exist.

Seed 004: the unique index on ``conversations.slug`` was dropped (or never built) and
colliding slugs piled up; ``CREATE UNIQUE INDEX`` now fails until they are resolved.

Precision: sure. The key is stated by a person (``--key``), the duplicates are counted
(rows with a NULL in the key never collide, so never count), and a key of a table with a
lifecycle counts active rows only. A column merely *named* like a key gets a note from
`missing-unique-index` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from noclash.doctor import fixes
from noclash.doctor.context import Context, plain
from noclash.doctor.intent import is_slug, stated_keys
from noclash.doctor.lifecycle import Lifecycle, unenforced_scope
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "duplicate-keys"
TITLE = "Duplicate values block a unique index"
HELP = (
    "Resolve the duplicate groups (for slugs, `noclash repair` suffixes all but the oldest), "
    "then build the unique index."
)
LINKS = (
    ("CREATE INDEX", "https://www.postgresql.org/docs/current/sql-createindex.html"),
    ("repair: suffix-duplicates", "repair.md#suffix-duplicates"),
)
# Fixture (noclash.doctor.fixtures) whose report is shown on the docs page, and its flags.
EXAMPLE = "colliding-slugs"
EXAMPLE_KEYS = ("chat_threads.slug",)


@dataclass(frozen=True)
class Sample(Evidence):
    count: int
    ids: list
    key: list


@dataclass(frozen=True)
class DuplicateKeysEvidence(Evidence):
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"lifecycle"})

    groups: int
    intent: str
    rows: int
    samples: tuple[Sample, ...]
    scope: tuple[str, ...] | None
    lifecycle: Lifecycle | None = None


def run(ctx: Context) -> Iterator[Finding]:
    for spec in stated_keys(ctx.catalog, ctx.options.keys):
        unenforced = unenforced_scope(ctx, spec.table, spec.columns)
        if unenforced is None:
            continue
        life, active = unenforced
        dups = ctx.duplicate_groups(spec.table, spec.columns, active)
        if not dups.groups:
            continue
        samples = []
        for row in dups.top:
            values = row[: len(spec.columns)]
            where = " AND ".join(f"{ctx.q(c)} = :v{i}" for i, c in enumerate(spec.columns))
            if active:
                where = f"{where} AND {active}"
            params = {f"v{i}": v for i, v in enumerate(values)}
            samples.append(
                Sample(
                    count=int(row[-1]),
                    ids=ctx.sample_ids(spec.table, where, params),
                    key=[plain(v) for v in values],
                )
            )
        slug = len(spec.columns) == 1 and is_slug(spec.columns[0])
        repair = "partial-unique" if life else "suffix-duplicates" if slug else None
        scope = f" {'/'.join(life.active)}" if life else ""
        counted = ctx.not_null(spec.columns) + (f" AND {active}" if active else "")
        yield Finding(
            check=ID,
            severity=Severity.ERROR,
            table=spec.table,
            columns=spec.columns,
            message=(
                f"{dups.rows}{scope} rows of {spec.table} share {dups.groups} values of "
                f"({', '.join(spec.columns)}), so a unique index on it cannot be built and "
                f"inserts of these values are not refused"
            ),
            evidence=DuplicateKeysEvidence(
                groups=dups.groups,
                intent=spec.reason,
                rows=dups.rows,
                samples=tuple(samples),
                scope=life.active if life else None,
                lifecycle=life,
            ),
            fix=Fix(
                statements=(fixes.duplicate_groups_sql(ctx, spec.table, spec.columns, counted),),
                repair=repair,
                idiom=ctx.idiom(),
            ),
        )


__all__ = ["HELP", "ID", "TITLE", "DuplicateKeysEvidence", "run"]
