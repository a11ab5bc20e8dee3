"""Names, registries, exit codes and emitted migrations: the doctor's seams."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest
from typer.testing import CliRunner

import noclash.doctor
from noclash.cli import app
from noclash.db.dialects import APP_DIALECTS, UnsupportedDialect, _by_name
from noclash.doctor import fixtures, repair
from noclash.doctor.context import Options
from noclash.doctor.dialects import DOCTOR_DIALECTS
from noclash.doctor.intent import KeySpec
from noclash.doctor.names import MAX_IDENTIFIER_BYTES, identifier

ROOT = pathlib.Path(noclash.doctor.__file__).parent


def test_identifier_fits_and_keeps_long_names_apart() -> None:
    assert identifier("t", "a", suffix="_key") == "t_a_key"
    long_a = identifier("conversations", "x" * 60 + "_a", suffix="_active_key")
    long_b = identifier("conversations", "x" * 60 + "_b", suffix="_active_key")
    assert long_a != long_b
    for name in (long_a, long_b, identifier("ü" * 40, suffix="_key")):
        assert len(name.encode()) <= MAX_IDENTIFIER_BYTES and name.endswith("_key")
    assert identifier("legacy.pages", "slug", suffix="_key") == "pages_slug_key"
    assert long_a == identifier("conversations", "x" * 60 + "_a", suffix="_active_key")


def test_no_truncation_or_engine_names_outside_dialect_modules() -> None:
    for path in ROOT.rglob("*.py"):
        if "dialects" in path.parts:
            continue
        text = path.read_text()
        assert "[:63]" not in text, path
        assert not re.search(r"""(dialect\.name|backend)\s*==\s*["']""", text), path
        assert not re.search(r"""==\s*["'](sqlite|postgresql)["']""", text), path


def test_checks_do_not_import_each_other() -> None:
    for path in (ROOT / "checks").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and path.name != "__init__.py":
                assert not (node.module or "").startswith("noclash.doctor.checks"), path


def test_one_registry_for_app_and_doctor() -> None:
    assert APP_DIALECTS.names == DOCTOR_DIALECTS.names == ("sqlite", "postgresql")
    assert _by_name("sqlite") is _by_name("sqlite")
    assert type(DOCTOR_DIALECTS.get("postgresql")).__name__ == "PostgreSQLDoctor"
    with pytest.raises(UnsupportedDialect, match="not 'mysql'"):
        _by_name("mysql")


def test_apply_exits_1_naming_errors_it_cannot_fix(tmp_path: pathlib.Path) -> None:
    """Duplicates of a stated key that is not a slug: no automatic repair, so exit 1."""
    import sqlite3

    db = tmp_path / "psids.db"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE psids (id INTEGER PRIMARY KEY, page_id TEXT, psid TEXT);"
        "INSERT INTO psids VALUES (1, 'p', 'a'), (2, 'p', 'a');"
    )
    con.close()
    result = CliRunner().invoke(
        app, ["repair", f"sqlite:///{db}", "--apply", "--key", "psids.page_id,psid"]
    )
    assert result.exit_code == 1, result.output
    assert "not fixed: duplicate-keys on psids(page_id, psid)" in result.stdout


def test_emitted_sql_runs_and_fixes(tmp_path: pathlib.Path) -> None:
    import sqlite3

    url = fixtures.build(f"sqlite:///{tmp_path / 'legacy.db'}", "closed-chat", "colliding-slugs")
    out = tmp_path / "fix.sql"
    args = ["repair", url, "--key", "chat_threads.slug", "--emit", "sql", "-o", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    con = sqlite3.connect(tmp_path / "legacy.db")
    con.executescript(out.read_text())
    con.close()
    assert repair(url, Options(keys=(KeySpec.parse("chat_threads.slug"),))).actions == []


def test_emitted_alembic_revision_sits_on_the_head(tmp_path: pathlib.Path) -> None:
    import sqlite3

    url = fixtures.build(f"sqlite:///{tmp_path / 'legacy.db'}", "closed-chat")
    con = sqlite3.connect(tmp_path / "legacy.db")
    con.executescript(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);"
        "INSERT INTO alembic_version VALUES ('0007_add_inbox');"
    )
    con.close()
    result = CliRunner().invoke(app, ["repair", url, "--emit", "alembic"])
    assert result.exit_code == 0
    text = result.stdout
    compile(text, "revision.py", "exec")
    assert "down_revision = '0007_add_inbox'" in text and "op.execute(" in text
    assert "schema managed by alembic" in CliRunner().invoke(app, ["repair", url]).stdout


def test_emitted_django_migration_changes_the_model_state(tmp_path: pathlib.Path) -> None:
    """The migration's state_operations apply to Django's own state classes."""
    import sqlite3

    from django.db import models
    from django.db.migrations.state import ModelState, ProjectState

    url = fixtures.build(f"sqlite:///{tmp_path / 'legacy.db'}", "closed-chat")
    con = sqlite3.connect(tmp_path / "legacy.db")
    con.executescript(
        "CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, "
        "applied TEXT); INSERT INTO django_migrations VALUES (1, 'inbox', '0003_status', '');"
        "ALTER TABLE conversations RENAME TO inbox_conversation;"
    )
    con.close()
    result = CliRunner().invoke(app, ["repair", url, "--emit", "django", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [path] = (tmp_path / "inbox" / "migrations").glob("0004_noclash_repair_*.py")
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    migration = namespace["Migration"]
    assert migration.dependencies == [("inbox", "0003_status")]
    state = ProjectState()
    state.add_model(
        ModelState(
            "inbox",
            "conversation",
            [
                ("id", models.AutoField(primary_key=True)),
                ("instagramConnectionId", models.TextField()),
                ("psid", models.TextField()),
                ("status", models.TextField()),
            ],
            {"unique_together": {("instagramConnectionId", "psid")}},
        )
    )
    for op in migration.operations:
        for state_op in op.state_operations:
            state_op.state_forwards("inbox", state)
    model = state.models["inbox", "conversation"]
    assert not model.options["unique_together"]
    [constraint] = model.options["constraints"]
    assert constraint.fields == ("instagramConnectionId", "psid")
    assert constraint.condition == models.Q(status__in=["OPEN", "SNOOZED"])
