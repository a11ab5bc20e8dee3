"""A key with no unique index behind it.

Checking in code ("SELECT then INSERT", seed 000's helper, seed 002's five checks) is a
race: two requests both see "free" and both insert. Only a unique index makes it a rule.

Precision: a key stated with ``--key`` is sure (warning, repaired by `add-unique-index`,
or `partial-unique` on a table with a lifecycle). A column only *named* like a key
(``*token*``, ``*slug*``, ``session_id``, ``public_id``, ``*uuid*``) is a guess: a note
asking for a review, never repaired. Secrets, credentials, URLs and free text are never
guessed (``accessToken``, ``tokenUrl``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from noclash.doctor import fixes
from noclash.doctor.context import Context
from noclash.doctor.intent import KeySpec, named_keys, stated_keys
from noclash.doctor.lifecycle import Lifecycle, unenforced_scope
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "missing-unique-index"
TITLE = "Unique keys with no unique index"
HELP = (
    "Build the unique index (`CREATE UNIQUE INDEX CONCURRENTLY`, then "
    "`ADD CONSTRAINT ... UNIQUE USING INDEX`): `noclash repair` does it for keys stated "
    "with `--key`. A column only named like a key: if the application looks rows up by it, "
    "declare the index (or pass `--key`); if not, nothing to do."
)
LINKS = (
    (
        "ADD table_constraint_using_index",
        "https://www.postgresql.org/docs/current/sql-altertable.html",
    ),
    ("repair: add-unique-index", "repair.md#add-unique-index"),
)


@dataclass(frozen=True)
class MissingUniqueIndexEvidence(Evidence):
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"lifecycle"})

    duplicate_groups: int
    intent: str
    rows: int
    lifecycle: Lifecycle | None = None


def _finding(ctx: Context, spec: KeySpec) -> Finding | None:
    unenforced = unenforced_scope(ctx, spec.table, spec.columns)
    if unenforced is None:
        return None
    life, active = unenforced
    groups = ctx.duplicate_groups(spec.table, spec.columns, active).groups
    cols = ", ".join(spec.columns)
    evidence = MissingUniqueIndexEvidence(
        duplicate_groups=groups, intent=spec.reason, rows=ctx.row_count(spec.table), lifecycle=life
    )
    if not spec.declared:
        return Finding(
            check=ID,
            severity=Severity.NOTE,
            table=spec.table,
            columns=spec.columns,
            message=(
                f"{spec.table}({cols}) is named like a key but nothing declares it unique: "
                f"if the application looks rows up by it, declare a unique index (or pass "
                f"--key {spec.table}.{cols}); {groups} duplicate groups today"
            ),
            evidence=evidence,
            fix=Fix(
                statements=(fixes.duplicate_groups_sql(ctx, spec.table, spec.columns),),
                idiom=ctx.idiom(),
            ),
        )
    if groups:
        return None  # duplicate-keys reports it, with the duplicates to resolve first
    if life:
        steps = fixes.partial_unique(
            ctx, spec.table, spec.columns, life, None, close_duplicates=False
        )
    else:
        steps = fixes.add_unique_index(ctx, spec.table, spec.columns)
    return Finding(
        check=ID,
        severity=Severity.WARNING,
        table=spec.table,
        columns=spec.columns,
        message=(
            f"{spec.table}({cols}) is a unique key ({spec.reason}) but no unique index "
            f"enforces it: concurrent inserts can both succeed"
        ),
        evidence=evidence,
        fix=Fix(
            statements=fixes.statements(steps or []),
            repair="partial-unique" if life else "add-unique-index",
            idiom=ctx.idiom(),
        ),
    )


def run(ctx: Context) -> Iterator[Finding]:
    for spec in [
        *stated_keys(ctx.catalog, ctx.options.keys),
        *named_keys(ctx.catalog, ctx.options.keys),
    ]:
        finding = _finding(ctx, spec)
        if finding is not None:
            yield finding


__all__ = ["HELP", "ID", "TITLE", "MissingUniqueIndexEvidence", "run"]
