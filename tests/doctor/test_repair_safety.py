"""Repairs are transactional and back up before they change anything."""

from __future__ import annotations

import json

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from noclash.config import normalise_database_url
from noclash.doctor import RepairFailed, diagnose, fixtures, repair
from noclash.doctor.catalog import BACKUP_TABLE
from noclash.doctor.context import Options
from noclash.doctor.intent import KeySpec
from tests.doctor.helpers import snapshot


def _backup_rows(url: str) -> list[tuple]:
    engine = sa.create_engine(normalise_database_url(url))
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(BACKUP_TABLE):
                return []
            return conn.exec_driver_sql(
                f"SELECT action, table_name, row_data FROM {BACKUP_TABLE}"
            ).all()
    finally:
        engine.dispose()


SLUGS = Options(keys=(KeySpec.parse("chat_threads.slug"),))


def test_failure_rolls_back_data_and_backup(empty_url: str) -> None:
    """A suffixed slug that is already taken: the guard refuses, nothing stays changed."""
    fixtures.build(empty_url, "colliding-slugs")
    engine = sa.create_engine(normalise_database_url(empty_url))
    with engine.begin() as conn:  # row 6 ("hello-world") would become "hello-world-6"
        conn.exec_driver_sql(
            "INSERT INTO chat_threads VALUES (100, 'Hello six', 'hello-world-6', 'now')"
        )
    engine.dispose()
    before = snapshot(empty_url)
    with pytest.raises(RepairFailed, match="rolled back"):
        repair(empty_url, SLUGS, apply=True)
    assert snapshot(empty_url) == before
    assert _backup_rows(empty_url) == []


def test_backup_table_holds_the_old_rows(empty_url: str) -> None:
    fixtures.build(empty_url, "colliding-slugs")
    repair(empty_url, SLUGS, apply=True)
    rows = _backup_rows(empty_url)
    assert {(a, t) for a, t, _ in rows} == {("suffix-duplicates", "chat_threads")}
    old = sorted(json.loads(d)["slug"] for _a, _t, d in rows)
    assert old == ["hello-world", "navigate-example-website", "navigate-example-website"]
    # The doctor ignores its own backup table.
    assert diagnose(empty_url, SLUGS).findings == []


def test_unreadable_sequence_is_a_note_not_an_error(fresh_pg_url: str) -> None:
    libpq = fresh_pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS doctor_reader")
        conn.execute("CREATE ROLE doctor_reader LOGIN")
        conn.execute("CREATE TABLE tickets (id serial PRIMARY KEY, subject text)")
        conn.execute("INSERT INTO tickets (id, subject) VALUES (5, 'imported')")
        conn.execute("GRANT SELECT ON tickets TO doctor_reader")
    url = make_url(fresh_pg_url).set(username="doctor_reader").render_as_string(False)
    try:
        report = diagnose(url)
        [f] = report.findings
        assert (f.check, f.severity, f.table) == ("sequence-behind", "note", "tickets")
        assert report.exit_code == 0
        [g] = diagnose(fresh_pg_url).findings  # the owner sees it is behind
        assert (g.check, g.severity) == ("sequence-behind", "error")
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute("DROP TABLE tickets")
            conn.execute("DROP ROLE doctor_reader")


def test_postgresql_plan_builds_concurrently_and_attaches(fresh_pg_url: str) -> None:
    fixtures.build(fresh_pg_url, "colliding-slugs")
    [action] = repair(fresh_pg_url, SLUGS).actions
    assert any("CREATE UNIQUE INDEX CONCURRENTLY" in s for s in action.statements)
    assert any("UNIQUE USING INDEX" in s for s in action.statements)
    assert "SHARE UPDATE EXCLUSIVE" in action.locks
    repair(fresh_pg_url, SLUGS, apply=True)
    engine = sa.create_engine(normalise_database_url(fresh_pg_url))
    with engine.connect() as conn:
        kind = conn.exec_driver_sql(
            "SELECT contype FROM pg_constraint WHERE conname = 'chat_threads_slug_key'"
        ).scalar()
    engine.dispose()
    assert kind == "u"


def test_tables_outside_the_search_path(fresh_pg_url: str) -> None:
    """Another schema: names are qualified in findings, fixes and repairs."""
    engine = sa.create_engine(normalise_database_url(fresh_pg_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA legacy")
        conn.exec_driver_sql(
            "CREATE TABLE legacy.convs (id int PRIMARY KEY, psid text, status text)"
        )
        conn.exec_driver_sql("CREATE UNIQUE INDEX convs_psid_key ON legacy.convs (psid)")
        conn.exec_driver_sql("INSERT INTO legacy.convs VALUES (1, 'a', 'CLOSED'), (2, 'b', 'OPEN')")
        conn.exec_driver_sql("CREATE TABLE legacy.pages (id int PRIMARY KEY, slug text)")
        conn.exec_driver_sql("INSERT INTO legacy.pages VALUES (1, 'x'), (2, 'x')")
    engine.dispose()
    options = Options(keys=(KeySpec.parse("legacy.pages.slug"),))
    found = {(f.check, f.table) for f in diagnose(fresh_pg_url, options).findings}
    assert found == {
        ("lifecycle-unique", "legacy.convs"),
        ("duplicate-keys", "legacy.pages"),
    }
    repair(fresh_pg_url, options, apply=True)
    assert diagnose(fresh_pg_url, options).findings == []


def test_sqlite_inline_unique_is_rebuilt_keeping_everything(fresh_sqlite_url: str) -> None:
    """A UNIQUE inside SQLite's CREATE TABLE goes with the 12-step rebuild: foreign keys,
    indexes, triggers, views and AUTOINCREMENT's high-water mark survive it."""
    import sqlite3

    path = make_url(fresh_sqlite_url).database
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE pages (id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE convs (id INTEGER PRIMARY KEY AUTOINCREMENT,
          page_id INTEGER NOT NULL REFERENCES pages (id),
          psid TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'OPEN'
            CHECK (status IN ('OPEN', 'CLOSED')),
          touched TEXT, UNIQUE (page_id, psid));
        CREATE TABLE msgs (id INTEGER PRIMARY KEY, conv_id INTEGER REFERENCES convs (id));
        CREATE INDEX convs_status ON convs (status);
        CREATE TRIGGER convs_touch AFTER UPDATE OF status ON convs
          BEGIN UPDATE convs SET touched = 'yes' WHERE id = NEW.id; END;
        CREATE VIEW open_convs AS SELECT id, psid FROM convs WHERE status = 'OPEN';
        INSERT INTO pages VALUES (1, 'p');
        INSERT INTO convs (id, page_id, psid, status) VALUES (1, 1, 'a', 'CLOSED'),
          (2, 1, 'b', 'OPEN'), (9, 1, 'c', 'OPEN');
        DELETE FROM convs WHERE id = 9;
        INSERT INTO msgs VALUES (1, 1), (2, 2);
        """
    )
    con.close()
    before = snapshot(fresh_sqlite_url)
    [action] = repair(fresh_sqlite_url).actions
    assert action.repair == "partial-unique" and "rebuilding" in action.summary
    result = repair(fresh_sqlite_url, apply=True)
    assert result.unfixed == []
    assert snapshot(fresh_sqlite_url) == before
    assert diagnose(fresh_sqlite_url).findings == []
    con = sqlite3.connect(path)
    con.execute("PRAGMA foreign_keys = ON")
    try:
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        assert {
            "convs_status",
            "convs_touch",
            "open_convs",
            "convs_page_id_psid_active_key",
        } <= names
        # The closed conversation no longer blocks a new one; active ones stay unique.
        con.execute("INSERT INTO convs (page_id, psid) VALUES (1, 'a')")
        with pytest.raises(sqlite3.IntegrityError):
            con.execute("INSERT INTO convs (page_id, psid) VALUES (1, 'a')")
        with pytest.raises(sqlite3.IntegrityError):  # the foreign key still holds
            con.execute("INSERT INTO convs (page_id, psid) VALUES (7, 'z')")
        # AUTOINCREMENT did not forget id 9; the trigger and the view still work.
        assert con.execute("SELECT max(id) FROM convs").fetchone()[0] == 10
        con.execute("UPDATE convs SET status = 'CLOSED' WHERE id = 2")
        assert con.execute("SELECT touched FROM convs WHERE id = 2").fetchone()[0] == "yes"
        assert con.execute("SELECT count(*) FROM open_convs").fetchone()[0] == 1
    finally:
        con.rollback()
        con.close()


def test_backfill_uuid_typed_column_and_progress(fresh_pg_url: str) -> None:
    engine = sa.create_engine(normalise_database_url(fresh_pg_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE visits (id int PRIMARY KEY, session_id uuid, note text)")
        conn.exec_driver_sql("CREATE UNIQUE INDEX visits_session_id_key ON visits (session_id)")
        conn.exec_driver_sql(
            "INSERT INTO visits SELECT i, CASE WHEN mod(i, 3) = 0 THEN NULL "
            "ELSE gen_random_uuid() END, 'n' FROM generate_series(1, 1200) AS i"
        )
    engine.dispose()
    # NULLs never collide in a plain unique column: nothing to report...
    assert diagnose(fresh_pg_url).findings == []
    # ...unless the application looks rows up by the key.
    options = Options(keys=(KeySpec.parse("visits.session_id"),))
    messages: list[str] = []
    result = repair(fresh_pg_url, options, apply=True, on_progress=messages.append)
    [action] = result.actions
    assert action.repair == "backfill-keys" and action.changed_rows == 400
    assert any("gen_random_uuid()" in m for m in messages)
    assert diagnose(fresh_pg_url, options).findings == []
    engine = sa.create_engine(normalise_database_url(fresh_pg_url))
    with engine.connect() as conn:
        nullable = conn.exec_driver_sql(
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'visits' AND column_name = 'session_id'"
        ).scalar()
    engine.dispose()
    assert nullable == "YES"  # a backfill, not a new rule the application may break


def test_weak_tokens_without_unique_index_get_one(empty_url: str) -> None:
    import random
    import string

    rng = random.Random(5)
    tokens = {"".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(80)}
    engine = sa.create_engine(normalise_database_url(empty_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE widgets (id INTEGER PRIMARY KEY, embed_token TEXT)")
        conn.execute(
            sa.text("INSERT INTO widgets VALUES (:i, :t)"),
            [{"i": i, "t": t} for i, t in enumerate(sorted(tokens))],
        )
    engine.dispose()
    # Named like a token but declared nowhere: a note, no repair.
    [note] = diagnose(empty_url).findings
    assert (note.check, note.severity) == ("missing-unique-index", "note")
    assert repair(empty_url).actions == []
    options = Options(keys=(KeySpec.parse("widgets.embed_token"),))
    checks = {f.check for f in diagnose(empty_url, options).findings}
    assert {"weak-tokens", "missing-unique-index"} <= checks
    repair(empty_url, options, apply=True)
    assert diagnose(empty_url, options).findings == []


def test_lifecycle_constraint_on_postgresql(fresh_pg_url: str) -> None:
    engine = sa.create_engine(normalise_database_url(fresh_pg_url))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE convs (id int PRIMARY KEY, page_id text, psid text, status text, "
            "CONSTRAINT convs_page_psid_key UNIQUE (page_id, psid))"
        )
        conn.exec_driver_sql(
            "INSERT INTO convs VALUES (1, 'p', 'a', 'CLOSED'), (2, 'p', 'b', 'OPEN')"
        )
    engine.dispose()
    [action] = repair(fresh_pg_url).actions
    assert "DROP CONSTRAINT" in action.statements[-1]
    repair(fresh_pg_url, apply=True)
    assert diagnose(fresh_pg_url).findings == []
    engine = sa.create_engine(normalise_database_url(fresh_pg_url))
    with engine.begin() as conn:  # the closed chat no longer blocks a new one
        conn.exec_driver_sql("INSERT INTO convs VALUES (3, 'p', 'a', 'OPEN')")
    engine.dispose()


def test_doctor_runs_read_only_and_leaves_a_pooled_engine_writable(empty_url: str) -> None:
    from noclash.doctor.diagnose import read_only_session

    fixtures.build(empty_url, "colliding-slugs")
    engine = sa.create_engine(normalise_database_url(empty_url))  # pooled, the caller's
    try:
        with (
            pytest.raises(sa.exc.DBAPIError),
            read_only_session(engine) as conn,
        ):
            from noclash.doctor.context import Options
            from noclash.doctor.diagnose import inspect

            inspect(conn, Options())
            conn.exec_driver_sql("DELETE FROM chat_threads")
        assert diagnose(engine).findings
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE chat_threads SET title = title || '!'")
    finally:
        engine.dispose()
    assert snapshot(empty_url)["chat_threads"]["__rows__"] == 17  # the DELETE was refused
