"""Values that would make ``ALTER COLUMN ... TYPE uuid USING col::uuid`` fail.

Seeds 000/001 end with exactly that migration on a column of 6-8 character tokens: it
aborts on the first non-uuid value, mid-deploy. Count them before, not during.

Which columns, and how sure: weak-token columns (declared unique, and their fix is a move
to uuid) get a warning; text columns only *named* like uuids (``*uuid*``, ``*guid*``,
``session_id``, ``public_id``) get a note, since nothing says a cast is planned. A column
that merely *contains* some uuids (a psid that is a widget session id for one channel and
a Meta id for another) is not a uuid column.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from noclash.doctor import fixes
from noclash.doctor.context import Context
from noclash.doctor.intent import is_legacy, names_uuid, never_a_key
from noclash.doctor.model import Evidence, Finding, Fix, Severity
from noclash.doctor.tokens import declared_token_columns, masked_examples, weak

ID = "uuid-castability"
TITLE = "Text that would not cast to uuid"
HELP = (
    "Keep the non-uuid values in a legacy column and give the rows UUIDv4 values "
    "(`noclash repair`), then change the type; never cast in place."
)
LINKS = (
    ("UUID type input", "https://www.postgresql.org/docs/current/datatype-uuid.html"),
    ("ALTER TABLE ... TYPE", "https://www.postgresql.org/docs/current/sql-altertable.html"),
    ("lint: column-type-rewrite", "column-type-rewrite.md"),
)
# Fixture (noclash.doctor.fixtures) whose report is shown on the docs page.
EXAMPLE = "short-tokens"


@dataclass(frozen=True)
class UuidCastabilityEvidence(Evidence):
    examples: list[str]
    failing: int
    ids: list
    uuid_values: int


def run(ctx: Context) -> Iterator[Finding]:
    token_columns = set(declared_token_columns(ctx))
    for tname, table in ctx.catalog.tables.items():
        for col in table.columns.values():
            if not col.is_text or is_legacy(col.name):
                continue
            weak_col = (tname, col.name) in token_columns and weak(ctx, tname, col.name) is not None
            if not (weak_col or names_uuid(col)):
                continue
            q = ctx.q(col.name)
            ok = ctx.dialect.uuid_shaped(q)
            ctx.step(f"casting {tname}.{col.name}")
            total, shaped = ctx.rows(
                f"SELECT count({q}), coalesce(sum(CASE WHEN {ok} THEN 1 ELSE 0 END), 0) "
                f"FROM {ctx.t(tname)}",
                what=tname,
            )[0]
            failing = int(total) - int(shaped)
            if not failing:
                continue
            bad = f"{q} IS NOT NULL AND NOT {ok}"
            examples = masked_examples(ctx, tname, col.name, bad)
            yield Finding(
                check=ID,
                severity=Severity.WARNING if weak_col else Severity.NOTE,
                table=tname,
                columns=(col.name,),
                message=(
                    f"{failing} of {total} values of {tname}.{col.name} are not uuids: "
                    f"ALTER COLUMN {col.name} TYPE uuid USING {col.name}::uuid would fail"
                ),
                evidence=UuidCastabilityEvidence(
                    examples=examples,
                    failing=failing,
                    ids=ctx.sample_ids(tname, bad),
                    uuid_values=int(shaped),
                ),
                fix=Fix(
                    statements=(
                        f"SELECT {q} FROM {ctx.t(tname)} WHERE {q} IS NOT NULL "
                        f"AND NOT {ctx.dialect.uuid_shaped_sql(q)}",
                    ),
                    repair=(
                        "migrate-weak-tokens"
                        if weak_col
                        and never_a_key(col) != "secret"
                        and fixes.token_migration_blocker(ctx, tname, col.name) is None
                        else None
                    ),
                    idiom=ctx.idiom(),
                ),
            )


__all__ = ["HELP", "ID", "TITLE", "UuidCastabilityEvidence", "run"]
