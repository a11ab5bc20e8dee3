"""Values distinct as text but equal once normalised (case, spaces, uuid spelling).

A unique index on text compares bytes: ``K3X9QA`` and ``k3x9qa`` coexist, as do a uuid
with and without hyphens. The day a lookup lower-cases (a case-insensitive URL, a
``lower()`` index, a migration to the ``uuid`` type) the two rows collide.

Precision: only columns declared unique on their own (an index or ``--key``); the variants
are counted exactly. Whether the application will ever compare them case-insensitively is
a guess, hence a warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from noclash.doctor.context import Context, plain
from noclash.doctor.intent import declared_alone, is_legacy
from noclash.doctor.model import Evidence, Finding, Fix, Severity

ID = "normalised-duplicates"
TITLE = "Keys that collide once lower-cased or cast to uuid"
HELP = (
    "Normalise values on write (lower-case, trim, canonical uuid), merge or rename the "
    "variants, then index the normalised form: `CREATE UNIQUE INDEX ... (lower(col))`."
)
LINKS = (
    ("Indexes on expressions", "https://www.postgresql.org/docs/current/indexes-expressional.html"),
    ("UUID type input", "https://www.postgresql.org/docs/current/datatype-uuid.html"),
)
# Fixture (noclash.doctor.fixtures) whose report is shown on the docs page.
EXAMPLE = "short-tokens"


@dataclass(frozen=True)
class Sample(Evidence):
    ids: list
    normalised: object
    values: list


@dataclass(frozen=True)
class NormalisedDuplicatesEvidence(Evidence):
    groups: int
    samples: tuple[Sample, ...]


def normal_form(ctx: Context, column: str) -> str:
    q = ctx.q(column)
    uuid_form = f"lower(replace(replace(replace(trim({q}), '-', ''), '{{', ''), '}}', ''))"
    return f"CASE WHEN {ctx.dialect.uuid_shaped(q)} THEN {uuid_form} ELSE lower(trim({q})) END"


def run(ctx: Context) -> Iterator[Finding]:
    for tname, table in ctx.catalog.tables.items():
        for col in table.columns.values():
            if not col.is_text or is_legacy(col.name):
                continue
            if not declared_alone(tname, table, col.name, ctx.options.keys):
                continue
            norm = normal_form(ctx, col.name)
            q = ctx.q(col.name)
            ctx.step(f"normalising {tname}.{col.name}")
            base = (
                f"SELECT {norm} AS k, count(DISTINCT {q}) AS n FROM {ctx.t(tname)} "
                f"WHERE {q} IS NOT NULL GROUP BY {norm} HAVING count(DISTINCT {q}) > 1"
            )
            groups = int(ctx.scalar(f"SELECT count(*) FROM ({base}) AS g", what=tname))
            if not groups:
                continue
            samples = []
            for k, _n in ctx.rows(f"{base} ORDER BY n DESC, k LIMIT 5", what=tname):
                values = ctx.rows(
                    f"SELECT DISTINCT {q} FROM {ctx.t(tname)} WHERE {norm} = :k "
                    f"ORDER BY {q} LIMIT 5",
                    {"k": k},
                    what=tname,
                )
                samples.append(
                    Sample(
                        ids=ctx.sample_ids(tname, f"{norm} = :k", {"k": k}),
                        normalised=plain(k),
                        values=[plain(v[0]) for v in values],
                    )
                )
            yield Finding(
                check=ID,
                severity=Severity.WARNING,
                table=tname,
                columns=(col.name,),
                message=(
                    f"{groups} {'group' if groups == 1 else 'groups'} of {tname}.{col.name} "
                    f"values are distinct as text but equal once lower-cased or read as uuid: "
                    f"a case-insensitive lookup, a lower() index or a change to the uuid type "
                    f"will collide"
                ),
                evidence=NormalisedDuplicatesEvidence(groups=groups, samples=tuple(samples)),
                fix=Fix(
                    statements=(
                        f"SELECT lower(trim({q})), count(DISTINCT {q}) FROM {ctx.t(tname)} "
                        f"GROUP BY 1 HAVING count(DISTINCT {q}) > 1",
                    ),
                    idiom=ctx.idiom(),
                ),
            )
