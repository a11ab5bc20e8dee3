"""The CLI edge: formats, exit codes (0 clean, 1 error findings, 2 cannot connect/read)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from noclash.cli import app
from noclash.doctor import fixtures
from noclash.doctor.checks import CHECKS

runner = CliRunner()
# The legacy fixture's slug column has no unique index: only a person can say it is a key.
SLUG_KEY = ("--key", "chat_threads.slug")


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def legacy_sqlite(tmp_path: Path) -> str:
    return fixtures.build(f"sqlite:///{tmp_path / 'legacy.db'}")


def test_doctor_exit_codes_and_json(legacy_sqlite: str, fresh_sqlite_url: str) -> None:
    result = invoke("doctor", legacy_sqlite, "--format", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and doc["dialect"] == "sqlite"
    assert doc["summary"]["error"] == 3
    assert doc["orm"] is None
    assert list(doc) == sorted(doc)
    assert set(doc) == {
        "checks_run",
        "dialect",
        "findings",
        "orm",
        "schema_version",
        "summary",
        "target",
        "tool",
    }
    for finding in doc["findings"]:  # the schema documented in docs/doctor/index.md
        assert list(finding) == [
            "check",
            "columns",
            "evidence",
            "fix",
            "message",
            "severity",
            "table",
        ]
        assert list(finding["fix"]) == ["idiom", "repair", "sql"]
    assert {f["check"] for f in doc["findings"] if f["severity"] == "error"} == {
        "weak-tokens",
        "null-keys",
        "lifecycle-unique",
    }
    stated = json.loads(invoke("doctor", legacy_sqlite, "-f", "json", *SLUG_KEY).stdout)
    assert "duplicate-keys" in {f["check"] for f in stated["findings"]}
    # An empty database is clean.
    Path(make_url(fresh_sqlite_url).database).touch()
    assert invoke("doctor", fresh_sqlite_url).exit_code == 0


def test_warnings_alone_exit_zero(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    import sqlite3

    con = sqlite3.connect(tmp_path / "w.db")
    con.executescript(
        "CREATE TABLE pages (id INTEGER PRIMARY KEY, slug TEXT);INSERT INTO pages VALUES (1, 'a');"
    )
    con.close()
    result = invoke("doctor", url, "-f", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["summary"]["note"] == 1  # named like a key: a guess
    result = invoke("doctor", url, "-f", "json", "--key", "pages.slug")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["summary"]["warning"] == 1


def test_sarif_structure(legacy_sqlite: str) -> None:
    result = invoke("doctor", legacy_sqlite, "--format", "sarif")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["version"] == "2.1.0"
    [run] = doc["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [c.ID for c in CHECKS]
    assert run["results"]
    for res in run["results"]:
        assert res["ruleId"] in {r["id"] for r in rules}
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["level"] in {"error", "warning", "note"}
        assert res["message"]["text"]
        assert res["locations"][0]["logicalLocations"][0]["kind"] == "table"


def test_exclude_and_key(legacy_sqlite: str) -> None:
    result = invoke(
        "doctor",
        legacy_sqlite,
        "-f",
        "json",
        "--exclude",
        "weak-tokens",
        "--exclude",
        "null-keys",
        "--exclude",
        "duplicate-keys",
        "--exclude",
        "lifecycle-unique",
    )
    assert result.exit_code == 0
    assert invoke("doctor", legacy_sqlite, "--exclude", "nope").exit_code == 2
    assert invoke("doctor", legacy_sqlite, "--key", "nope").exit_code == 2
    assert invoke("doctor", legacy_sqlite, "--key", "missing.col").exit_code == 2


def test_rich_output_and_repair_cli(legacy_sqlite: str) -> None:
    result = invoke("doctor", legacy_sqlite)
    assert result.exit_code == 1
    assert "weak-tokens" in result.stdout and "3 errors" in result.stdout
    plan = invoke("repair", legacy_sqlite, *SLUG_KEY)
    assert plan.exit_code == 0 and "dry run" in plan.stdout
    assert invoke("doctor", legacy_sqlite).exit_code == 1  # the plan changed nothing
    applied = invoke("repair", legacy_sqlite, "--apply", *SLUG_KEY)
    assert applied.exit_code == 0, applied.output
    assert "post-condition verified" in applied.stdout
    assert invoke("doctor", legacy_sqlite, *SLUG_KEY).exit_code == 0
    assert "nothing to repair" in invoke("repair", legacy_sqlite, "--apply", *SLUG_KEY).stdout


def test_backup_dir_jsonl(legacy_sqlite: str, tmp_path: Path) -> None:
    out = tmp_path / "backups"
    applied = invoke("repair", legacy_sqlite, "--apply", "--backup-dir", str(out), *SLUG_KEY)
    assert applied.exit_code == 0, applied.output
    [path] = out.glob("*.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["action"] for r in records} == {
        "backfill-keys",
        "migrate-weak-tokens",
        "suffix-duplicates",
    }
    tokens = [r for r in records if r["action"] == "migrate-weak-tokens"]
    assert len(tokens) == 401 and all(len(r["row"]["public_token"]) == 6 for r in tokens)


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "mysql://user@localhost/db",
        "sqlite:////nonexistent/dir/db.sqlite",
        "postgresql://nobody@127.0.0.1:1/none",
    ],
)
def test_cannot_connect_is_exit_2(url: str) -> None:
    for command in ("doctor", "repair"):
        result = invoke(command, url)
        assert result.exit_code == 2, result.output
        assert "noclash:" in result.stderr


def test_missing_permission_is_exit_2(fresh_pg_url: str) -> None:
    """A role that may not connect cannot be inspected at all: exit 2. (A role that may not
    read one table is inspected without it: see test_review_fixes_2.)"""
    libpq = fresh_pg_url.replace("postgresql+psycopg://", "postgresql://")
    database = make_url(fresh_pg_url).database
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS doctor_nobody")
        conn.execute("CREATE ROLE doctor_nobody LOGIN")
        conn.execute(f'REVOKE CONNECT ON DATABASE "{database}" FROM PUBLIC')
    url = make_url(fresh_pg_url).set(username="doctor_nobody").render_as_string(False)
    try:
        result = invoke("doctor", url)
        assert result.exit_code == 2, result.output
        assert "permission denied" in result.stderr
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute("DROP ROLE doctor_nobody")


def test_lint_cli(tmp_path: Path) -> None:
    sql = tmp_path / "0001.sql"
    sql.write_text("CREATE TABLE t (id int);\nCREATE INDEX t_id ON t (id);\n")
    assert invoke("lint", str(sql)).exit_code == 0
    sql.write_text("CREATE INDEX c_name ON chatbots (name);\n")
    result = invoke("lint", str(sql), "-f", "sarif")
    assert result.exit_code == 1
    loc = json.loads(result.stdout)["runs"][0]["results"][0]["locations"][0]
    assert loc["physicalLocation"]["region"]["startLine"] == 1
    assert invoke("lint", str(tmp_path / "missing.sql")).exit_code == 2


def test_not_a_database_file_is_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.db"
    garbage.write_bytes(b"this is not a SQLite file" * 100)
    result = invoke("doctor", f"sqlite:///{garbage}")
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_repair_plan_as_json(legacy_sqlite: str) -> None:
    result = invoke("repair", legacy_sqlite, "--format", "json", *SLUG_KEY)
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["applied"] is False and doc["manual"] == []
    repairs = {a["repair"] for a in doc["actions"]}
    assert repairs == {
        "backfill-keys",
        "migrate-weak-tokens",
        "suffix-duplicates",
        "partial-unique",
    }
    assert all(a["locks"] and a["statements"] for a in doc["actions"])


def test_a_repair_of_a_database_another_connection_holds_says_so(legacy_sqlite: str) -> None:
    """The application writes (or left a transaction open) while ``repair --apply`` runs:
    the repair waits, then says the database is locked and that nothing was changed. It
    said "cannot read ...: database is locked", which read as a broken database."""
    import sqlite3

    path = make_url(legacy_sqlite).database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = invoke("repair", legacy_sqlite, *SLUG_KEY, "--apply")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 2, result.output
    assert "is locked by another connection" in result.output
    assert "nothing was changed" in result.output
    assert "Traceback" not in result.output
    # Once the lock is released the same repair goes through.
    assert invoke("repair", legacy_sqlite, *SLUG_KEY, "--apply").exit_code in (0, 1)
