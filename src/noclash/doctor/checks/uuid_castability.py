"""Values that would make ``ALTER COLUMN ... TYPE uuid USING col::uuid`` fail.

Seeds 000/001 end with exactly that migration on a column of 6-8 character tokens: it
aborts on the first non-uuid value, mid-deploy. Count them before, not during.

Which columns: text columns named like uuids (`*uuid*`, `*guid*`, `session_id`,
`public_id`) and columns of weak random tokens (whose fix is a move to uuid). A column
that merely *contains* some uuids (a psid that is a widget session id for one channel and
a Meta id for another) is not a uuid column.
"""

from __future__ import annotations

from collections.abc import Iterator

from noclash.doctor.checks import weak_tokens
from noclash.doctor.context import Context
from noclash.doctor.intent import is_legacy, looks_like_key, names_uuid
from noclash.doctor.model import Finding, Fix, Severity
from noclash.doctor.tokens import mask

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


def run(ctx: Context) -> Iterator[Finding]:
    token_columns = set(weak_tokens.candidates(ctx))
    for tname, table in ctx.catalog.tables.items():
        for col in table.columns.values():
            if not col.is_text or is_legacy(col.name):
                continue
            weak = (tname, col.name) in token_columns and weak_tokens.weak(
                ctx, tname, col.name
            ) is not None
            if not (weak or names_uuid(col)):
                continue
            q = ctx.q(col.name)
            ok = ctx.dialect.uuid_shaped(q)
            ctx.step(f"casting {tname}.{col.name}")
            total, shaped = ctx.rows(
                f"SELECT count({q}), coalesce(sum(CASE WHEN {ok} THEN 1 ELSE 0 END), 0) "
                f"FROM {ctx.t(tname)}",
                what=tname,
            )[0]
            total, shaped = int(total), int(shaped)
            failing = total - shaped
            if not failing:
                continue
            bad = f"{q} IS NOT NULL AND NOT {ok}"
            empty = int(
                ctx.scalar(f"SELECT count(*) FROM {ctx.t(tname)} WHERE {q} = ''", what=tname)
            )
            repair = "migrate-weak-tokens" if weak else None
            if empty == failing and looks_like_key(col):
                repair = "backfill-keys"  # only empty strings: they are missing keys
            examples = [
                mask(r[0])
                for r in ctx.rows(
                    f"SELECT {q} FROM {ctx.t(tname)} WHERE {bad} ORDER BY {q} LIMIT 3",
                    what=tname,
                )
            ]
            yield Finding(
                check=ID,
                severity=Severity.WARNING,
                table=tname,
                columns=(col.name,),
                message=(
                    f"{failing} of {total} values of {tname}.{col.name} are not uuids: "
                    f"ALTER COLUMN {col.name} TYPE uuid USING {col.name}::uuid would fail"
                ),
                evidence={
                    "examples": examples,
                    "failing": failing,
                    "ids": ctx.sample_ids(tname, bad),
                    "uuid_values": shaped,
                },
                fix=Fix(
                    sql=(
                        f"SELECT {q} FROM {ctx.t(tname)} WHERE {q} IS NOT NULL "
                        f"AND NOT {ctx.dialect.uuid_shaped_sql(q)};"
                    ),
                    repair=repair,
                ),
            )
