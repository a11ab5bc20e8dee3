"""Defects a reviewer reproduced on PostgreSQL schemas like real applications have (Rails,
Django, pagila): quoted names with ``:`` and ``%``, varchar token columns, partitioned
tables, tokens other tables reference. Each test fails without its fix."""

from __future__ import annotations

import psycopg
import pytest

from noclash.doctor import diagnose, repair
from tests.doctor.helpers import assert_tokens_left_to_a_person, run_sql, snapshot

# 500 six-character hex tokens under a unique index: weak by the birthday bound.
WEAK = "substr(md5('t' || g), 1, 6)"


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(_libpq(url)) as conn:
        return conn.execute(sql).fetchall()


def test_colon_and_percent_in_quoted_names(fresh_pg_url: str) -> None:
    """A quoted name with `` :x`` was taken for a bind parameter (a traceback), and one with
    ``%`` was printed and run as ``%%`` (a name that does not exist)."""
    run_sql(
        fresh_pg_url,
        # run_sql passes parameters: "%%" is one "%".
        'CREATE TABLE "100%% :tokens" (id serial PRIMARY KEY, "token :x" varchar(64) UNIQUE)',
        f'INSERT INTO "100%% :tokens" ("token :x") SELECT {WEAK} FROM generate_series(1, 500) g',
        'CREATE TABLE "sess :ions" (id serial PRIMARY KEY, session_id text, '
        'CONSTRAINT "sess:id" UNIQUE NULLS NOT DISTINCT (session_id))',
        """INSERT INTO "sess :ions" (session_id) VALUES (gen_random_uuid()::text), (NULL)""",
        """SELECT setval('"sess :ions_id_seq"', 1, false)""",
    )
    before = snapshot(fresh_pg_url)
    report = diagnose(fresh_pg_url)
    found = {(f.check, f.table) for f in report.findings}
    assert {
        ("weak-tokens", "100% :tokens"),
        ("null-keys", "sess :ions"),
        ("sequence-behind", "sess :ions"),
    } <= found
    sql = " ".join(f.fix.sql or "" for f in report.findings)
    assert '"100% :tokens"' in sql and "%%" not in sql
    assert '"sess :ions_id_seq"' in sql

    result = repair(fresh_pg_url, apply=True)
    assert {a.repair for a in result.actions} == {
        "migrate-weak-tokens",
        "backfill-keys",
        "reset-sequence",
    }
    assert not result.unfixed
    after = snapshot(fresh_pg_url)
    assert {t: e["__rows__"] for t, e in after.items()} == {
        t: e["__rows__"] for t, e in before.items()
    }
    assert after["100% :tokens"]["token :x_legacy"] == before["100% :tokens"]["token :x"]
    assert not repair(fresh_pg_url, apply=True).actions


def test_token_column_too_short_for_a_uuid(fresh_pg_url: str) -> None:
    """A Django ``CharField(max_length=8)`` token: the migration wrote 36-character UUIDs
    into varchar(8) and every --apply failed there, so the actions after it never ran."""
    run_sql(
        fresh_pg_url,
        "CREATE TABLE invites (id bigserial PRIMARY KEY, code varchar(8) NOT NULL, "
        "CONSTRAINT invites_code_uniq UNIQUE (code) DEFERRABLE INITIALLY DEFERRED)",
        f"INSERT INTO invites (code) SELECT {WEAK} FROM generate_series(1, 500) g",
    )
    weak = assert_tokens_left_to_a_person(fresh_pg_url, "at most 8 characters")
    # The SQL to run by hand widens the column first, and then works.
    run_sql(fresh_pg_url, *(s.replace(" CONCURRENTLY", "") for s in weak.fix.statements))
    assert not [f for f in diagnose(fresh_pg_url).findings if f.check == "weak-tokens"]


def test_weak_tokens_on_a_partitioned_table(fresh_pg_url: str) -> None:
    """The migration's UPDATE committed, then CREATE INDEX CONCURRENTLY on the partitioned
    table failed: the legacy column stayed without an index and the next run saw nothing
    to do."""
    run_sql(
        fresh_pg_url,
        "CREATE TABLE links (token varchar(64) PRIMARY KEY, target text) PARTITION BY HASH (token)",
        "CREATE TABLE links_0 PARTITION OF links FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
        "CREATE TABLE links_1 PARTITION OF links FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
        f"INSERT INTO links SELECT {WEAK}, 'x' FROM generate_series(1, 500) g",
    )
    before = _rows(fresh_pg_url, "SELECT token, target FROM links ORDER BY token")
    assert "weak-tokens" in {f.check for f in diagnose(fresh_pg_url).findings}
    result = repair(fresh_pg_url, apply=True)
    assert not result.actions
    assert "weak-tokens" in {f.check for f in result.manual}
    assert _rows(fresh_pg_url, "SELECT token, target FROM links ORDER BY token") == before


@pytest.mark.parametrize(
    "reference",
    ["ON UPDATE CASCADE", "DEFERRABLE INITIALLY DEFERRED"],
    ids=["cascade", "deferred"],
)
def test_token_a_foreign_key_references(fresh_pg_url: str, reference: str) -> None:
    """A cascading foreign key changed the referencing rows, which no backup held; a
    deferred one (Django's) failed every --apply at the migration's ALTER TABLE."""
    run_sql(
        fresh_pg_url,
        "CREATE TABLE carts (id serial PRIMARY KEY, cart_token varchar(40) UNIQUE)",
        f"INSERT INTO carts (cart_token) SELECT {WEAK} FROM generate_series(1, 500) g",
        "CREATE TABLE cart_items (id serial PRIMARY KEY, "
        f"cart_token varchar(40) REFERENCES carts (cart_token) {reference})",
        "INSERT INTO cart_items (cart_token) SELECT cart_token FROM carts",
    )
    assert_tokens_left_to_a_person(fresh_pg_url, "foreign key references carts.cart_token")


def test_lint_skips_copy_data_of_a_pg_dump() -> None:
    """pg_dump's ``COPY ... FROM stdin`` rows were read as statements, and the statement
    after ``\\.`` was lost in the last row (an unsafe UNIQUE constraint went unreported)."""
    from noclash.doctor.lint import lint_sql, split

    sql = (
        "COPY chatbots (id, name) FROM stdin;\n"
        "1\tCREATE INDEX nope ON t (c);\n"
        "CREATE INDEX row_that_looks_like_sql ON chatbots (name);\n"
        "\\.\n"
        'ALTER TABLE "Chat Bots" ADD CONSTRAINT u1 UNIQUE (token);\n'
    )
    assert [(s.line, s.sql.split()[0]) for s in split(sql)] == [(1, "COPY"), (5, "ALTER")]
    assert [(f.check, f.line) for f in lint_sql(sql)] == [("unique-constraint-without-index", 5)]
