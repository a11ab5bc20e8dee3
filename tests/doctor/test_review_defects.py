"""Defects a reviewer reproduced on databases someone else designed: each test builds the
schema of the report and checks the repair (or the doctor) does what it says."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from noclash.cli import app
from noclash.doctor import DoctorError, RepairFailed, diagnose, fixes, repair
from noclash.doctor.context import Options
from noclash.doctor.intent import KeySpec
from tests.doctor.helpers import run_sql, snapshot

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def sqlite_db(tmp_path: Path, script: str, name: str = "t.db") -> str:
    con = sqlite3.connect(tmp_path / name)
    con.executescript(script)
    con.commit()
    con.close()
    return f"sqlite:///{tmp_path / name}"


SLUGS = Options(keys=(KeySpec.parse("chat_threads.slug"),))
# A plain index already has the name the unique index would get.
TAKEN_NAME = (
    "CREATE TABLE chat_threads (id INTEGER PRIMARY KEY, slug TEXT)",
    "CREATE INDEX chat_threads_slug_key ON chat_threads (slug)",
    "INSERT INTO chat_threads VALUES (1, 'a'), (2, 'a'), (3, 'b')",
)


# -- 1. a name collision must not pass for a unique index -----------------------------------
def test_unique_index_name_taken_by_a_plain_index(empty_url: str) -> None:
    run_sql(empty_url, *TAKEN_NAME)
    result = repair(empty_url, SLUGS, apply=True)
    assert result.unfixed == []
    # The old plain index is now redundant (a warning, for a person); the key is enforced.
    assert {f.check for f in diagnose(empty_url, SLUGS).findings} == {"redundant-indexes"}
    assert repair(empty_url, SLUGS).actions == []  # a second run has nothing to do
    with pytest.raises(sa.exc.IntegrityError):  # the key is enforced
        run_sql(empty_url, "INSERT INTO chat_threads VALUES (9, 'b')")


def test_unique_index_name_taken_cli(tmp_path: Path) -> None:
    url = sqlite_db(tmp_path, ";".join(TAKEN_NAME))
    first = invoke("repair", url, "--key", "chat_threads.slug", "--apply")
    assert first.exit_code == 0, first.output
    assert "chat_threads_slug_2_key" in first.stdout
    second = invoke("repair", url, "--key", "chat_threads.slug", "--apply")
    assert second.exit_code == 0, second.output
    assert "nothing to repair" in second.stdout


def test_post_condition_requires_an_enforcing_unique_index(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the taken name used again, ``IF NOT EXISTS`` would build nothing: the
    post-condition must notice that no unique index enforces the key."""

    def usual_name(_ctx: object, table: str, columns: tuple[str, ...], **_kw: object) -> str:
        return fixes.unique_index_name(table, columns)

    monkeypatch.setattr(fixes, "index_name", usual_name)
    run_sql(empty_url, *TAKEN_NAME)
    with pytest.raises(RepairFailed, match="unique"):
        repair(empty_url, SLUGS, apply=True)


# -- 2. clear errors instead of tracebacks --------------------------------------------------
NON_ASCII = """
CREATE TABLE conversations (id INTEGER PRIMARY KEY, canal TEXT, numéro TEXT, status TEXT,
  UNIQUE (canal, numéro));
INSERT INTO conversations VALUES (1, 'ig', '1', 'OPEN'), (2, 'ig', '2', 'CLOSED');
CREATE TABLE entrées (id INTEGER PRIMARY KEY, canal TEXT, numéro TEXT, status TEXT,
  UNIQUE (canal, numéro));
INSERT INTO entrées VALUES (1, 'ig', '1', 'OPEN'), (2, 'ig', '2', 'CLOSED');
"""


def test_non_ascii_identifiers_are_words(tmp_path: Path) -> None:
    from noclash.doctor.dialects.sqlite import _rename_created, remove_inline_unique

    sql = "CREATE TABLE entrées (id INT, numéro TEXT, UNIQUE (numéro))"
    assert remove_inline_unique(sql, ("numéro",)) == "CREATE TABLE entrées (id INT, numéro TEXT)"
    assert _rename_created(sql, '"t2"').startswith('CREATE TABLE "t2" (')
    url = sqlite_db(tmp_path, NON_ASCII)
    result = invoke("doctor", url, "-f", "json")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1), result.output
    assert "lifecycle-unique" in result.stdout


def test_unparsable_create_table_is_a_clear_error() -> None:
    from noclash.doctor.catalog import Index, Table
    from noclash.doctor.dialects.sqlite import SQLiteDoctor
    from noclash.doctor.errors import UnsupportedSchema

    engine = sa.create_engine("sqlite://")
    table = Table(name="t", schema=None, create_sql="CREATE TABLE t (a TEXT, b TEXT)")
    index = Index(name="sqlite_autoindex_t_1", table="t", columns=("a",), unique=True)
    with engine.connect() as conn, pytest.raises(UnsupportedSchema, match="nothing was changed"):
        SQLiteDoctor().rebuild_without_unique(conn, table, index)
    engine.dispose()


FK_MISMATCH = """
CREATE TABLE chat_threads (id INTEGER PRIMARY KEY, slug TEXT);
CREATE TABLE links (id INTEGER PRIMARY KEY, thread_slug TEXT REFERENCES chat_threads (slug));
INSERT INTO chat_threads VALUES (1, 'a'), (2, 'a');
INSERT INTO links VALUES (1, 'a');
"""


def test_foreign_key_mismatch_is_reported_and_nothing_changes(tmp_path: Path) -> None:
    url = sqlite_db(tmp_path, FK_MISMATCH)
    before = snapshot(url)
    result = invoke("repair", url, "--key", "chat_threads.slug", "--apply")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "links(thread_slug) REFERENCES chat_threads(slug)" in result.output
    assert "nothing was changed" in result.output
    assert snapshot(url) == before
    con = sqlite3.connect(make_url(url).database)
    assert con.execute("SELECT name FROM sqlite_master WHERE name LIKE 'noclash%'").fetchall() == []
    con.close()


# -- 4. --key names what exists, spelled as the engine reads names --------------------------
def test_key_matches_names_as_the_engine_does(empty_url: str) -> None:
    run_sql(
        empty_url,
        "CREATE TABLE chat_threads (id INTEGER PRIMARY KEY, slug TEXT)",
        "INSERT INTO chat_threads VALUES (1, 'a'), (2, 'a')",
    )
    for typed in ("chat_threads.Slug", "CHAT_THREADS.slug"):  # unquoted: folded on both
        findings = diagnose(empty_url, Options(keys=(KeySpec.parse(typed),))).findings
        assert [(f.check, f.table, f.columns) for f in findings] == [
            ("duplicate-keys", "chat_threads", ("slug",))
        ], typed
    quoted = Options(keys=(KeySpec.parse('chat_threads."Slug"'),))
    if empty_url.startswith("sqlite"):  # SQLite ignores case even in quotes
        assert len(diagnose(empty_url, quoted).findings) == 1
    else:  # PostgreSQL: a quoted name is exact, and there is no column "Slug"
        with pytest.raises(DoctorError, match="Slug"):
            diagnose(empty_url, quoted)


def test_key_mixed_case_names_on_postgresql(fresh_pg_url: str) -> None:
    run_sql(
        fresh_pg_url,
        'CREATE TABLE "Pages" (id int PRIMARY KEY, "Slug" text)',
        """INSERT INTO "Pages" VALUES (1, 'a'), (2, 'a')""",
    )
    [f] = diagnose(fresh_pg_url, Options(keys=(KeySpec.parse("Pages.Slug"),))).findings
    assert (f.table, f.columns) == ("Pages", ("Slug",))
    with pytest.raises(DoctorError, match="pages"):  # folds to pages, which does not exist
        diagnose(fresh_pg_url, Options(keys=(KeySpec.parse("pages.slug"),)))


def test_unknown_key_column_is_an_error(tmp_path: Path) -> None:
    url = sqlite_db(
        tmp_path,
        "CREATE TABLE chat_threads (id INTEGER PRIMARY KEY, slug TEXT);"
        "INSERT INTO chat_threads VALUES (1, 'a'), (2, 'a');",
    )
    result = invoke("doctor", url, "--key", "chat_threads.slugg")
    assert result.exit_code == 2, result.output
    assert "chat_threads.slugg" in result.output
    assert invoke("repair", url, "--key", "chat_threads.slugg", "--apply").exit_code == 2
    assert invoke("doctor", url, "--key", "Chat_Threads.SLUG").exit_code == 1


# -- 3. a table name with a double quote can be rebuilt --------------------------------------
def test_rebuild_of_a_table_whose_name_has_a_quote(tmp_path: Path) -> None:
    url = sqlite_db(
        tmp_path,
        'CREATE TABLE "we""ird" (id INTEGER PRIMARY KEY, psid TEXT, status TEXT, UNIQUE (psid));'
        """INSERT INTO "we""ird" VALUES (1, 'a', 'OPEN'), (2, 'b', 'CLOSED');""",
    )
    key = Options(keys=(KeySpec.parse('we"ird.psid'),))
    before = snapshot(url)
    result = repair(url, key, apply=True)
    assert [a.repair for a in result.actions] == ["partial-unique"]
    assert result.unfixed == []
    assert snapshot(url) == before
    assert diagnose(url, key).findings == []


# -- 5. a lifecycle repair says what upserts need, and keeps ON CONFLICT clauses ----------
SUBSCRIPTIONS = """
CREATE TABLE subscriptions (id INTEGER PRIMARY KEY, user_id INT NOT NULL, plan_id INT NOT NULL,
  status TEXT NOT NULL DEFAULT 'active', updated_at TEXT, UNIQUE (user_id, plan_id){conflict});
INSERT INTO subscriptions (id, user_id, plan_id, status) VALUES (1, 1, 1, 'active'),
  (2, 2, 1, 'cancelled');
"""
UPSERT_ACTIVE = (
    "INSERT INTO subscriptions (user_id, plan_id, status) VALUES (1, 1, 'active') "
    "ON CONFLICT (user_id, plan_id) WHERE status IN ('active') DO UPDATE SET updated_at = 'now'"
)


def test_a_lifecycle_repair_says_what_an_upsert_must_then_write(tmp_path: Path) -> None:
    """The repair the issue asks for (a composite unique that blocks closed rows becomes
    partial) runs without --key, and the finding tells the application's upserts the
    target they need; that target works after the repair."""
    url = sqlite_db(tmp_path, SUBSCRIPTIONS.format(conflict=""))
    [f] = diagnose(url).findings
    assert (f.check, f.fix.repair) == ("lifecycle-unique", "partial-unique")
    assert "ON CONFLICT (user_id, plan_id) WHERE status IN ('active')" in f.message
    result = repair(url, apply=True)
    assert [a.repair for a in result.actions] == ["partial-unique"] and result.unfixed == []
    assert diagnose(url).findings == []
    con = sqlite3.connect(make_url(url).database)
    con.execute(UPSERT_ACTIVE)
    con.execute("INSERT INTO subscriptions (user_id, plan_id, status) VALUES (2, 1, 'active')")
    con.close()


def test_on_conflict_clause_is_never_dropped(tmp_path: Path) -> None:
    url = sqlite_db(tmp_path, SUBSCRIPTIONS.format(conflict=" ON CONFLICT REPLACE"))
    before = snapshot(url)
    key = Options(keys=(KeySpec.parse("subscriptions.user_id,plan_id"),))
    [f] = diagnose(url, key).findings
    assert f.fix.repair is None and "ON CONFLICT REPLACE" in f.message
    assert repair(url, key, apply=True).actions == []
    assert snapshot(url) == before
    con = sqlite3.connect(make_url(url).database)
    assert "ON CONFLICT REPLACE" in con.execute("SELECT sql FROM sqlite_master").fetchone()[0]
    con.close()


# -- 6. the legacy token column is the row's own identifier ---------------------------------
def test_weak_token_migration_is_done_in_one_run(tmp_path: Path) -> None:
    import hashlib

    rows = ", ".join(  # 8 hex digits: 32 random-looking bits, weak
        f"({i}, '{hashlib.sha256(str(i).encode()).hexdigest()[:8]}', "
        f"'{'OPEN' if i % 2 else 'CLOSED'}')"
        for i in range(1, 41)
    )
    url = sqlite_db(
        tmp_path,
        "CREATE TABLE chat_threads (id INTEGER PRIMARY KEY, token TEXT UNIQUE, status TEXT);"
        f"INSERT INTO chat_threads VALUES {rows};",
    )
    first = invoke("repair", url, "--apply")
    assert first.exit_code == 0, first.output
    assert "lifecycle-unique" not in first.output
    after = snapshot(url)
    second = invoke("repair", url, "--apply")
    assert second.exit_code == 0, second.output
    assert "nothing to repair" in second.stdout
    assert snapshot(url) == after
    con = sqlite3.connect(make_url(url).database)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    assert "chat_threads_token_legacy_key" in names
