"""Lint rules: each reports and stays quiet."""

from __future__ import annotations

from noclash.doctor.lint import lint_sql, split


def ids(sql: str) -> list[tuple[str, int]]:
    return [(f.check, f.line) for f in lint_sql(sql, "m.sql")]


def test_split_keeps_lines_and_ignores_quoted_semicolons() -> None:
    stmts = split("-- c;\nSELECT ';';\n/* x;\n */ SELECT $$a;b$$;\nSELECT 1")
    assert [(s.sql, s.line) for s in stmts] == [
        ("SELECT ';'", 2),
        ("SELECT $$a;b$$", 4),
        ("SELECT 1", 5),
    ]


def test_unique_constraint_without_index() -> None:
    assert ids("ALTER TABLE chatbots ADD CONSTRAINT k UNIQUE (public_token);") == [
        ("unique-constraint-without-index", 1)
    ]
    assert ids("ALTER TABLE chatbots ADD CONSTRAINT k UNIQUE USING INDEX ix;") == []


def test_index_not_concurrent() -> None:
    assert ids("CREATE UNIQUE INDEX ix ON chatbots (public_token);") == [
        ("index-not-concurrent", 1)
    ]
    assert ids("CREATE INDEX CONCURRENTLY ix ON chatbots (name);") == []
    assert ids("CREATE TABLE new_t (a int);\nCREATE INDEX ix ON new_t (a);") == []


def test_concurrently_in_transaction() -> None:
    sql = "BEGIN;\nCREATE INDEX CONCURRENTLY ix ON t (a);\nCOMMIT;\n"
    assert ids(sql) == [("concurrently-in-transaction", 2)]
    assert ids("CREATE INDEX CONCURRENTLY ix ON t (a);") == []


def test_column_type_rewrite_seed_000_migration() -> None:
    sql = (
        "-- 20240501_add_default_uuid.sql\n"
        "ALTER TABLE chatbots\n"
        "  ALTER COLUMN public_token SET DATA TYPE uuid USING public_token::uuid,\n"
        "  ALTER COLUMN public_token SET DEFAULT gen_random_uuid();\n"
    )
    [f] = lint_sql(sql, "m.sql")
    assert (f.check, f.line, f.columns) == ("column-type-rewrite", 2, ("public_token",))
    assert ids("ALTER TABLE chatbots ALTER COLUMN public_token SET DEFAULT 'x';") == []


def test_add_column_unique_builds_an_index_too() -> None:
    assert ids("ALTER TABLE users ADD COLUMN handle text UNIQUE;") == [
        ("unique-constraint-without-index", 1)
    ]
    assert ids("ALTER TABLE users ADD COLUMN handle text;") == []
