"""Defects a second review reproduced on hostile schemas: a table the role cannot read,
json and array values in backups, a backup table the role cannot create, a failure at
COMMIT, triggers that fire during a repair, SQLite's foreign keys, long column names, and
lint on quoted names and DO blocks. Each test fails without its fix."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from noclash.cli import app
from noclash.config import normalise_database_url
from noclash.doctor import RepairFailed, diagnose, repair
from noclash.doctor.catalog import BACKUP_TABLE
from noclash.doctor.context import Options
from noclash.doctor.intent import KeySpec
from noclash.doctor.lint import lint_sql
from tests.doctor.helpers import assert_tokens_left_to_a_person, run_sql, snapshot

runner = CliRunner()
SLUGS = Options(keys=(KeySpec.parse("chat_threads.slug"),))
# 500 six-character hex tokens under a unique index: weak by the birthday bound.
WEAK_PG = "substr(md5('t' || g), 1, 6)"


def invoke(*args: str):
    return runner.invoke(app, list(args))


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def role(url: str, *grants: str) -> Iterator[str]:
    """A login role of its own with only ``grants`` ({role} is its name); its URL."""
    name = f"doctor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
        for grant in grants:
            conn.execute(grant.format(role=name))
    try:
        yield make_url(url).set(username=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {name} TO CURRENT_USER")
            conn.execute(f"DROP OWNED BY {name}")
            conn.execute(f"DROP ROLE {name}")


def _rows(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(normalise_database_url(url))
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql(sql).all())
    finally:
        engine.dispose()


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


THREADS = (
    "CREATE TABLE chat_threads (id INTEGER PRIMARY KEY, slug TEXT)",
    "INSERT INTO chat_threads VALUES (1, 'a'), (2, 'a'), (3, 'b')",
)


# -- 1. a table the role cannot read is a note, not the end of the run ------------------------
def test_a_table_the_role_cannot_read_is_a_note(fresh_pg_url: str) -> None:
    run_sql(
        fresh_pg_url,
        *THREADS,
        "CREATE TABLE secret_stuff (id serial PRIMARY KEY, token varchar(64) UNIQUE)",
        f"INSERT INTO secret_stuff (token) SELECT {WEAK_PG} FROM generate_series(1, 500) g",
        "CREATE SCHEMA vault",
        "CREATE TABLE vault.keys (id int PRIMARY KEY, k text)",
    )
    with role(fresh_pg_url, "GRANT SELECT ON chat_threads TO {role}") as url:
        report = diagnose(url, SLUGS)
        notes = {(f.check, f.severity, f.table) for f in report.findings if f.severity == "note"}
        assert notes == {
            ("unreadable-tables", "note", "secret_stuff"),
            ("unreadable-tables", "note", "vault.keys"),
        }
        fixes = " ".join(f.fix.sql or "" for f in report.findings)
        assert "GRANT SELECT ON TABLE secret_stuff" in fixes
        assert "GRANT USAGE ON SCHEMA vault" in fixes
        assert {f.check for f in report.findings if f.severity == "error"} == {"duplicate-keys"}
        result = invoke("doctor", url)
        assert result.exit_code == 0, result.output
        assert "secret_stuff" in result.stdout
        # The owner sees the weak tokens; the role plans nothing on what it cannot read.
        assert "weak-tokens" in {f.check for f in diagnose(fresh_pg_url).findings}
        plan = repair(url, SLUGS)
        assert [(a.repair, a.table) for a in plan.actions] == [
            ("suffix-duplicates", "chat_threads")
        ]
        assert plan.manual == []


# -- 2. json, jsonb and array values are backed up as JSON ------------------------------------
def test_backup_of_json_and_array_columns_is_json(fresh_pg_url: str, tmp_path: Path) -> None:
    run_sql(
        fresh_pg_url,
        "CREATE TABLE chat_threads (id int PRIMARY KEY, slug text, doc jsonb, meta json, "
        "tags text[], refs uuid[])",
        "INSERT INTO chat_threads VALUES (1, 'a', '{}', '{}', '{}', '{}'), "
        """(2, 'a', '{"a": true, "n": null}', '[1, "x"]', '{x,y}', """
        "'{00000000-0000-4000-8000-000000000001}')",
    )
    expected = {
        "doc": {"a": True, "n": None},
        "meta": [1, "x"],
        "tags": ["x", "y"],
        "refs": ["00000000-0000-4000-8000-000000000001"],
    }
    repair(fresh_pg_url, SLUGS, apply=True)
    [(data,)] = _rows(fresh_pg_url, f"SELECT row_data FROM {BACKUP_TABLE}")
    row = json.loads(data)
    assert (row["id"], row["slug"]) == (2, "a")
    assert {c: json.loads(row[c]) for c in expected} == expected

    run_sql(
        fresh_pg_url,
        "ALTER TABLE chat_threads DROP CONSTRAINT chat_threads_slug_key",
        "UPDATE chat_threads SET slug = 'a'",
    )
    repair(fresh_pg_url, SLUGS, apply=True, backup_dir=tmp_path)
    [path] = tmp_path.iterdir()
    [line] = path.read_text().splitlines()
    row = json.loads(line)["row"]
    assert {c: json.loads(row[c]) for c in expected} == expected


# -- 3. a backup table the role cannot create is named, with the way around it ---------------
def test_backup_table_the_role_cannot_create(fresh_pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL 15+ grants no CREATE on ``public``: a role that may change the table got
    "permission denied for schema public", not told it was the backup table, nor that
    ``--backup-dir`` avoids it."""
    run_sql(
        fresh_pg_url,
        "CREATE TABLE sessions (id int PRIMARY KEY, session_id text UNIQUE)",
        "INSERT INTO sessions SELECT g, gen_random_uuid()::text FROM generate_series(1, 30) g",
        "INSERT INTO sessions VALUES (31, '')",
    )
    with role(fresh_pg_url, "GRANT SELECT, UPDATE ON sessions TO {role}") as url:
        before = snapshot(fresh_pg_url)
        result = invoke("repair", url, "--apply")
        assert result.exit_code == 1, result.output
        assert "rolled back" in result.output
        assert "backup to the table noclash_repair_backup" in result.output
        assert "permission denied for schema public" in result.output
        assert "--backup-dir" in result.output
        assert snapshot(fresh_pg_url) == before
        # The way around it works.
        result = invoke("repair", url, "--apply", "--backup-dir", str(tmp_path))
        assert result.exit_code == 0, result.output
        assert "backfill-keys" in result.output
        assert snapshot(fresh_pg_url) != before


# -- 4. a failure at COMMIT is a rolled-back repair, not "cannot read" -----------------------
def test_failure_at_commit_is_a_failed_repair(fresh_pg_url: str) -> None:
    run_sql(
        fresh_pg_url,
        *THREADS,
        "CREATE FUNCTION frozen() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'threads are frozen'; END$$",
        "CREATE CONSTRAINT TRIGGER no_renames AFTER UPDATE ON chat_threads "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION frozen()",
    )
    before = snapshot(fresh_pg_url)
    with pytest.raises(RepairFailed, match="rolled back: threads are frozen"):
        repair(fresh_pg_url, SLUGS, apply=True)
    result = invoke("repair", fresh_pg_url, "--key", "chat_threads.slug", "--apply")
    assert result.exit_code == 1, result.output
    assert "cannot read" not in result.output and "threads are frozen" in result.output
    assert snapshot(fresh_pg_url) == before
    # The backup went with the change: its table, made in the transaction, is gone too.
    assert _rows(fresh_pg_url, f"SELECT to_regclass('{BACKUP_TABLE}')") == [(None,)]


# -- 5. the plan says which triggers fire -----------------------------------------------------
def test_plan_lists_the_triggers_that_fire(empty_url: str) -> None:
    if _is_sqlite(empty_url):
        triggers = (
            "CREATE TRIGGER audit_renames AFTER UPDATE ON chat_threads "
            "BEGIN INSERT INTO audit (what) VALUES (old.slug); END",
            "CREATE TRIGGER audit_new AFTER INSERT ON chat_threads "
            "BEGIN INSERT INTO audit (what) VALUES (new.slug); END",
        )
    else:
        triggers = (
            "CREATE FUNCTION audit_it() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN INSERT INTO audit (what) VALUES (old.slug); RETURN NULL; END$$",
            "CREATE TRIGGER audit_renames AFTER UPDATE ON chat_threads "
            "FOR EACH ROW EXECUTE FUNCTION audit_it()",
            "CREATE TRIGGER audit_new AFTER INSERT ON chat_threads "
            "FOR EACH ROW EXECUTE FUNCTION audit_it()",
        )
    run_sql(empty_url, *THREADS, "CREATE TABLE audit (what text)", *triggers)
    [action] = repair(empty_url, SLUGS).actions
    assert action.triggers == ("audit_renames",)
    assert action.to_dict()["triggers"] == ["audit_renames"]
    result = invoke("repair", empty_url, "--key", "chat_threads.slug")
    assert "audit_renames" in result.stdout and "not in the backup" in result.stdout
    assert "audit_new" not in result.stdout
    repair(empty_url, SLUGS, apply=True)
    assert _rows(empty_url, "SELECT what FROM audit") == [("a",)]  # it did fire


# -- 6. SQLite's foreign keys guard the weak-token migration too ------------------------------
@pytest.mark.parametrize("references", ["carts (cart_token)", "carts"], ids=["column", "pk"])
def test_sqlite_token_a_foreign_key_references(tmp_path: Path, references: str) -> None:
    con = sqlite3.connect(tmp_path / "t.db")
    key = "UNIQUE" if "(" in references else "PRIMARY KEY"
    con.executescript(
        f"CREATE TABLE carts (id INTEGER, cart_token TEXT NOT NULL {key});"
        "CREATE TABLE cart_items (id INTEGER PRIMARY KEY, "
        f"cart_token TEXT REFERENCES {references});"
    )
    con.executemany(
        "INSERT INTO carts (id, cart_token) VALUES (?, ?)",
        [(i, format(i * 2654435761 % 16777216, "06x")) for i in range(1, 501)],
    )
    con.execute("INSERT INTO cart_items (cart_token) SELECT cart_token FROM carts")
    con.commit()
    con.close()
    url = f"sqlite:///{tmp_path / 't.db'}"
    assert_tokens_left_to_a_person(url, "foreign key references carts.cart_token")


# -- 7. a long token column's legacy column is found again ------------------------------------
def test_weak_tokens_of_a_long_column_name(empty_url: str) -> None:
    column = "public_token_of_the_embedded_chat_widget_on_every_partner_site"  # 62 bytes
    if _is_sqlite(empty_url):
        tokens = [format(i * 2654435761 % 16777216, "06x") for i in range(1, 501)]
        insert = "INSERT INTO widgets VALUES " + ", ".join(
            f"({i}, '{t}')" for i, t in enumerate(tokens, 1)
        )
    else:
        insert = f"INSERT INTO widgets SELECT g, {WEAK_PG} FROM generate_series(1, 500) g"
    run_sql(empty_url, f"CREATE TABLE widgets (id int PRIMARY KEY, {column} text UNIQUE)", insert)
    before = snapshot(empty_url)
    first = repair(empty_url, apply=True)
    assert [a.repair for a in first.actions] == ["migrate-weak-tokens"]
    assert first.unfixed == []
    assert repair(empty_url, apply=True).actions == []
    assert diagnose(empty_url).findings == []
    after = snapshot(empty_url)
    [legacy] = [c for c in after["widgets"] if c not in (column, "id", "__rows__")]
    assert legacy.endswith("_legacy") and len(legacy.encode()) <= 63
    assert after["widgets"][legacy] == before["widgets"][column]


# -- 8. lint reads quoted names as identifiers -------------------------------------------------
def _lint(sql: str) -> list[tuple[str, str | None, tuple[str, ...]]]:
    return [(f.check, f.table, f.columns) for f in lint_sql(sql, "m.sql")]


def test_lint_names_are_identifiers() -> None:
    assert _lint('CREATE INDEX ix ON "Conversations" (psid);') == [
        ("index-not-concurrent", "Conversations", ())
    ]
    assert _lint('CREATE INDEX ix ON app."Conversations" (psid);') == [
        ("index-not-concurrent", "app.Conversations", ())
    ]
    assert _lint('CREATE INDEX ON "Chat Bots" USING btree ("Name");') == [
        ("index-not-concurrent", "Chat Bots", ())
    ]
    assert _lint('CREATE INDEX "ix on x" ON "we""ird" (a);') == [
        ("index-not-concurrent", 'we"ird', ())
    ]
    assert _lint("CREATE INDEX ix ON Conversations (psid);") == [
        ("index-not-concurrent", "conversations", ())
    ]
    assert _lint('ALTER TABLE "Chat Bots" ADD CONSTRAINT "token key" UNIQUE (token);') == [
        ("unique-constraint-without-index", "Chat Bots", ())
    ]
    assert _lint('ALTER TABLE IF EXISTS ONLY "Bots" ALTER COLUMN "publicToken" TYPE uuid;') == [
        ("column-type-rewrite", "Bots", ("publicToken",))
    ]


def test_lint_tables_created_in_the_file_are_tracked_by_their_real_name() -> None:
    sql = (
        'CREATE TABLE "Chat Bots" (id int);\n'
        'CREATE INDEX a ON "Chat Logs" (id);\n'  # an existing table: reported
        'CREATE TABLE "Conversations" (id int);\n'
        "CREATE INDEX b ON conversations (id);\n"  # another, existing table: reported
        'CREATE INDEX c ON "Conversations" (id);\n'  # the new one: fine
        'CREATE INDEX d ON "Chat Bots" (id);\n'  # the new one: fine
    )
    assert [(f.line, f.table) for f in lint_sql(sql, "m.sql")] == [
        (2, "Chat Logs"),
        (4, "conversations"),
    ]


# -- 9. lint says what it did not check inside a DO block --------------------------------------
def test_lint_notes_a_do_block_it_did_not_check() -> None:
    sql = (
        "DO $$\nBEGIN\n  ALTER TABLE chatbots ALTER COLUMN public_token TYPE uuid "
        "USING public_token::uuid;\nEND\n$$;\n"
        "DO LANGUAGE plpgsql $body$ BEGIN EXECUTE 'CREATE INDEX ix ON t (a)'; END $body$;\n"
    )
    findings = lint_sql(sql, "m.sql")
    assert [(f.check, f.severity, f.line) for f in findings] == [
        ("unchecked-block", "note", 1),
        ("unchecked-block", "note", 6),
    ]
    assert "not checked" in findings[0].message
    # A block that runs no statement lint checks says nothing.
    assert lint_sql("DO $$ BEGIN UPDATE t SET a = 1; END $$;", "m.sql") == []
    # Nor a function body that runs no such statement (pg_dump files hold many).
    fn = "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT 1 $$;"
    assert lint_sql(fn, "m.sql") == []
    # A function that changes the schema when called is noted.
    fn = "CREATE OR REPLACE FUNCTION f() RETURNS void AS $$ ALTER TABLE t ADD UNIQUE (a) $$;"
    [f] = lint_sql(fn, "m.sql")
    assert (f.check, f.severity) == ("unchecked-block", "note")
    assert "function's body (ALTER TABLE)" in f.message
