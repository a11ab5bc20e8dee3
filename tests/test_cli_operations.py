"""The CLI as an operator meets it on a bad day: signals, secrets in logs, unusable databases
and settings, a database from another version, mistyped paths, full disks.

Each test runs the real ``noclash`` in a subprocess, as ``tests/test_cli.py`` does.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from noclash.db.engine import create_engine
from noclash.db.migrate import head_revision, upgrade
from tests.support.platforms import LoopbackTelegram, running, wait_for
from tests.support.serve import serving
from tests.support.server import free_port
from tests.test_outbound_crash import _queue_many

NOCLASH = [sys.executable, "-m", "noclash"]


def _run(
    *args: str, url: str, env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    environ = os.environ | {"NOCLASH_DATABASE_URL": url} | (env or {})
    return subprocess.run(
        [*NOCLASH, *args], env=environ, capture_output=True, text=True, timeout=120, **kwargs
    )


def _one_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single line a failed command printed, after checking its exit code."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- 1. SIGTERM and SIGHUP stop `serve` as SIGINT does ---------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_under_write_load_leaves_noclash_db_complete_and_exits_0(tmp_path: Path, sig):
    """uvicorn re-raises the SIGTERM it handled; the default action killed the process
    before the checkpoint, leaving acknowledged rows only in noclash.db-wal (exit 143)."""
    db = tmp_path / "noclash.db"
    created = 0
    lock = threading.Lock()
    with serving(f"sqlite:///{db}", tmp_path / "logs") as served:
        token = served.token
        assert token
        go = threading.Event()

        def write(n: int) -> None:
            nonlocal created
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=served.base_url, headers=headers, timeout=30) as client:
                go.wait()
                for i in range(100_000):
                    try:
                        r = client.post("/api/chatbots", json={"name": f"w{n}-{i}"})
                    except httpx.TransportError:
                        return  # the server stopped
                    if r.status_code != 201:
                        return
                    with lock:
                        created += 1

        writers = [threading.Thread(target=write, args=(n,)) for n in range(6)]
        for w in writers:
            w.start()
        go.set()
        assert wait_for(lambda: created >= 200, timeout=30)
        served.proc.send_signal(sig)
        code = served.proc.wait(timeout=60)
        for w in writers:
            w.join(timeout=60)
        log = served.stderr()
    assert code == 0, log[-2000:]
    wal = db.with_name("noclash.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    # The main file alone, copied where no WAL is beside it, holds every acknowledged row.
    lone = tmp_path / "alone" / "noclash.db"
    lone.parent.mkdir()
    shutil.copyfile(db, lone)
    with sqlite3.connect(lone) as conn:
        assert conn.execute("SELECT count(*) FROM chatbots").fetchone() == (created,)


# -- 2. No secrets in the logs ---------------------------------------------------------------


def test_worker_never_logs_the_telegram_token(database_url, tmp_path: Path):
    """logging.basicConfig(level=INFO) turned on httpx's per-request log, whose URL holds
    the bot's token (/bot<token>/sendMessage)."""
    with running(LoopbackTelegram()) as telegram:
        _queue_many(database_url, telegram, customers=2, per_customer=2)
        (bot,) = telegram.bots.values()
        env = os.environ | {
            "NOCLASH_DATABASE_URL": database_url,
            "NOCLASH_TELEGRAM_API_URL": telegram.api_url,
            "NOCLASH_DISPATCHER_POLL_SECONDS": "0.1",
        }
        log = tmp_path / "worker.log"
        with log.open("w") as out:
            worker = subprocess.Popen([*NOCLASH, "worker"], env=env, stdout=out, stderr=out)
        try:
            assert wait_for(lambda: len(telegram.delivered()) == 4, timeout=30), log.read_text()
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
    text = log.read_text()
    assert "noclash worker" in text  # it did log, on stderr
    assert bot.token not in text
    assert bot.token.split(":", 1)[1] not in text


def test_serve_never_logs_the_telegram_token(fresh_sqlite_url, tmp_path: Path):
    upgrade(fresh_sqlite_url)
    with running(LoopbackTelegram()) as telegram:
        _queue_many(fresh_sqlite_url, telegram, customers=1, per_customer=2)
        (bot,) = telegram.bots.values()
        env = {"NOCLASH_TELEGRAM_API_URL": telegram.api_url, "NOCLASH_DISPATCHER": "on",
               "NOCLASH_DISPATCHER_POLL_SECONDS": "0.1"}  # fmt: skip
        with serving(fresh_sqlite_url, tmp_path, env=env) as served:
            assert wait_for(lambda: len(telegram.delivered()) == 2, timeout=30)
            text = served.stderr()
    assert "Application startup complete" in text
    assert bot.token not in text and bot.token.split(":", 1)[1] not in text


# -- 3. Unusable databases and settings: one line, exit 2 -----------------------------------


def _garbage_file(tmp: Path) -> str:
    (tmp / "notes.db").write_text("these are not the pages you are looking for\n" * 100)
    return f"sqlite:///{tmp / 'notes.db'}"


def _unmigrated(tmp: Path) -> str:
    url = f"sqlite:///{tmp / 'old.db'}"
    upgrade(url, "0003")
    return url


@pytest.mark.parametrize(
    ("make_url", "args", "says"),
    [
        (lambda t: f"sqlite:///{t / 'no' / 'such' / 'dir.db'}", ["user", "list"], "directory"),
        (lambda t: f"sqlite:///{t / 'nocalsh.db'}", ["user", "list"], "does not exist"),
        (_garbage_file, ["user", "list"], "not a SQLite database"),
        (_garbage_file, ["serve", "--port", "1"], "not a SQLite database"),
        (lambda t: "mysql://me@localhost/chat", ["user", "list"], "mysql"),
        (lambda t: "garbage", ["db", "upgrade"], "not a URL"),
        (lambda t: "postgresql+asyncpg://me@localhost/chat", ["db", "current"], "psycopg"),
        (lambda t: "sqlite://", ["serve", "--port", "1"], "in-memory"),
        (lambda t: f"postgresql://me@127.0.0.1:{free_port()}/chat", ["worker"], "refused"),
        (_unmigrated, ["user", "list"], "noclash db upgrade"),
        (_unmigrated, ["db", "upgrade", "nosuchrev"], "nosuchrev"),
    ],
    ids=[
        "missing-directory",
        "missing-file",
        "not-a-database",
        "not-a-database-serve",
        "mysql",
        "garbage",
        "asyncpg",
        "in-memory",
        "pg-unreachable",
        "unmigrated-list",
        "unknown-target",
    ],
)
def test_an_unusable_database_is_one_line_and_exit_2(tmp_path: Path, make_url, args, says):
    result = _run(*args, url=make_url(tmp_path))
    line = _one_line(result)
    assert says in line
    assert "SELECT" not in line and "[SQL" not in line


def test_an_unknown_postgresql_database_or_role_is_one_line(pg_server_url):
    unknown_db = sa.make_url(pg_server_url).set(database="no_such_database_here")
    unknown_role = unknown_db.set(username="no_such_role_here", database="postgres")
    for url in (unknown_db, unknown_role):
        line = _one_line(_run("db", "current", url=url.render_as_string(hide_password=False)))
        assert "no_such" in line and "cannot open the database" in line


def test_an_unmigrated_postgresql_is_refused_with_what_to_run(fresh_pg_url):
    """A server database is migrated by `noclash db upgrade` only (an embedded one is
    migrated by `serve` and `user create` themselves, as docs/deployment.md says)."""
    assert "noclash db upgrade" in _one_line(_run("user", "list", url=fresh_pg_url))
    made = _run("user", "create", "a@example.com", url=fresh_pg_url)
    assert "noclash db upgrade" in _one_line(made)


def test_database_is_locked_is_one_line(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    upgrade(url)
    holder = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = _run("user", "create", "a@example.com", url=url,
                      env={"NOCLASH_SQLITE_BUSY_TIMEOUT_MS": "100"})  # fmt: skip
    finally:
        holder.close()
    assert "database is locked" in _one_line(result)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NOCLASH_TRUSTED_PROXIES", "foo"),
        ("NOCLASH_DISPATCHER", "maybe"),
        ("NOCLASH_SQLITE_BUSY_TIMEOUT_MS", "abc"),
        ("NOCLASH_MAX_BODY_BYTES", "-1"),
        ("NOCLASH_MAX_TEXT_LENGTH", "0"),
        ("NOCLASH_POOL_SIZE", "-5"),
        ("NOCLASH_POOL_MAX_OVERFLOW", "-1"),
        ("NOCLASH_SQLITE_BUSY_TIMEOUT_MS", "-1"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_the_variable(tmp_path: Path, variable, value):
    url = f"sqlite:///{tmp_path / 'any.db'}"  # never opened: the settings are read first
    for args in (["user", "list"], ["serve", "--port", str(free_port())], ["worker"]):
        line = _one_line(_run(*args, url=url, env={variable: value}))
        assert line.startswith(f"invalid setting {variable}="), line


def test_a_backup_into_a_missing_directory_is_one_line(database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL is backed up with pg_dump")
    line = _one_line(_run("backup", "/nonexistent-dir/b.db", url=database_url))
    assert line.startswith("cannot write /nonexistent-dir/b.db")


# -- 4. A revision this noclash does not know -----------------------------------------------


def test_a_database_at_an_unknown_revision_says_so_everywhere(database_url):
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    commands = [
        ["serve", "--no-migrate", "--port", str(free_port())],
        ["serve", "--migrate", "--port", str(free_port())],
        ["worker"],
        ["db", "upgrade"],
        ["db", "current"],
        ["user", "list"],
    ]
    for args in commands:
        line = _one_line(_run(*args, url=database_url))
        assert "at revision 0099, which this noclash does not know" in line, (args, line)


# -- 5. Mistyped paths, not noclash's databases, failed backups -------------------------------


def test_backup_of_a_mistyped_path_fails_and_creates_nothing(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'nocalsh.db'}"
    result = _run("backup", str(tmp_path / "nightly.db"), url=url)
    assert "does not exist" in _one_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    result = _run("db", "current", url=url)
    assert "does not exist" in _one_line(result)
    assert list(tmp_path.iterdir()) == []


def test_backup_refuses_a_database_that_is_not_noclash(tmp_path: Path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    result = _run("backup", str(tmp_path / "b.db"), url=f"sqlite:///{other}")
    assert "not a noclash database" in _one_line(result)
    assert not (tmp_path / "b.db").exists()


def _limit_file_size(limit: int):
    def apply() -> None:
        # A file may grow to `limit` bytes; past it, writes fail with EFBIG (as on a full
        # disk) instead of the process being killed by SIGXFSZ.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_backup_that_fails_half_way_leaves_nothing_and_the_retry_works(tmp_path: Path):
    db = tmp_path / "noclash.db"
    url = f"sqlite:///{db}"
    upgrade(url)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE ballast (b BLOB)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 512) "
        "INSERT INTO ballast SELECT randomblob(4096) FROM n"
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert db.stat().st_size > 2_000_000
    target = tmp_path / "backups" / "nightly.db"
    target.parent.mkdir()
    failed = _run("backup", str(target), url=url, preexec_fn=_limit_file_size(1_000_000))
    assert "nothing was left" in _one_line(failed)
    assert list(target.parent.iterdir()) == []
    retry = _run("backup", str(target), url=url)
    assert retry.returncode == 0, retry.stderr
    assert [p.name for p in target.parent.iterdir()] == ["nightly.db"]
    with sqlite3.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM ballast").fetchone() == (512,)


# -- 6. Bounds, output that never truncates, upgrades that never go down, host and port ----------


def test_user_list_never_truncates_a_long_email_when_piped(database_url):
    email = "a.very.long.local.part.that.goes.on.and.on@" + "sub." * 20 + "example.com"
    assert _run("user", "create", email, url=database_url).returncode == 0
    listed = _run("user", "list", url=database_url)
    assert listed.returncode == 0, listed.stderr
    assert email in listed.stdout and "…" not in listed.stdout
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(email)]
    assert row.split("\t")[:2] == [email, ""]


def test_db_upgrade_to_a_revision_below_the_current_is_an_error(database_url):
    line = _one_line(_run("db", "upgrade", "0005", url=database_url))
    assert f"at revision {head_revision()}, above 0005" in line
    current = _run("db", "current", url=database_url)
    assert current.returncode == 0 and current.stdout.startswith(head_revision())


def test_serve_listens_on_noclash_host_and_port(tmp_path: Path):
    port = free_port()
    url = f"sqlite:///{tmp_path / 'hp.db'}"
    env = os.environ | {"NOCLASH_DATABASE_URL": url, "NOCLASH_HOST": "127.0.0.1",
                        "NOCLASH_PORT": str(port)}  # fmt: skip
    proc = subprocess.Popen([*NOCLASH, "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        ready = lambda: _ready(f"http://127.0.0.1:{port}/healthz")  # noqa: E731
        assert wait_for(ready, timeout=60)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        time.sleep(0.1)
        return False
