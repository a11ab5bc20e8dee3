"""Operating noclash: users and tokens, backups, clean stops, workers, the version.

Every test runs the real CLI in a subprocess against a real database, and checks the effect
through the HTTP API or SQL, the way an operator would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from bench.processes import stop

from noclash import __version__
from noclash.chat.users import create_user
from tests.support.server import free_port, start_live_server

NOCLASH = [sys.executable, "-m", "noclash"]
TOKEN = re.compile(r"nc_[0-9a-f]{32}")


def _run(*args: str, url: str) -> subprocess.CompletedProcess:
    env = os.environ | {"NOCLASH_DATABASE_URL": url}
    return subprocess.run([*NOCLASH, *args], env=env, capture_output=True, text=True, timeout=120)


@contextmanager
def _serving(url: str, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``noclash serve`` in a subprocess; yields it and its base URL once it is ready."""
    port = free_port()
    proc = subprocess.Popen(
        [*NOCLASH, "serve", "--port", str(port), *args],
        env=os.environ | {"NOCLASH_DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield proc, base
    finally:
        stop(proc, signal.SIGINT, timeout=30)


def test_version():
    result = subprocess.run([*NOCLASH, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout == f"noclash {__version__}\n"


def test_rotate_and_revoke_tokens_take_effect_through_the_api(database_url):
    with start_live_server(database_url, auth_cache_seconds=0) as server:
        create_user(server.engine, "ops@example.com")
        rotated = _run("user", "rotate-token", "OPS@example.com", url=database_url)
        assert rotated.returncode == 0, rotated.stderr
        token = rotated.stdout.strip()
        assert TOKEN.fullmatch(token) and rotated.stdout == token + "\n"
        client = server.client(token)
        assert client.get("/api/chatbots").status_code == 200

        again = _run("user", "rotate-token", "ops@example.com", url=database_url)
        newer = again.stdout.strip()
        assert newer != token
        assert client.get("/api/chatbots").status_code == 401  # the old token stopped
        assert server.client(newer).get("/api/chatbots").status_code == 200

        revoked = _run("user", "revoke", "ops@example.com", url=database_url)
        assert revoked.returncode == 0 and revoked.stdout == ""
        assert server.client(newer).get("/api/chatbots").status_code == 401

        listed = _run("user", "list", url=database_url)
        assert listed.returncode == 0
        (line,) = [ln for ln in listed.stdout.splitlines() if "ops@example.com" in ln]
        assert "revoked" in line and newer not in listed.stdout

        back = _run("user", "rotate-token", "ops@example.com", url=database_url).stdout.strip()
        assert server.client(back).get("/api/chatbots").status_code == 200
        assert "active" in _run("user", "list", url=database_url).stdout

    unknown = _run("user", "rotate-token", "nobody@example.com", url=database_url)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "no user" in unknown.stderr


def test_serve_bootstraps_an_admin_on_an_empty_postgresql(fresh_pg_url):
    assert _run("db", "upgrade", url=fresh_pg_url).returncode == 0
    with _serving(fresh_pg_url) as (proc, base):
        assert proc.stdout is not None
        token = proc.stdout.readline().strip()
        assert TOKEN.fullmatch(token), token
        made = httpx.post(
            f"{base}/api/chatbots",
            json={"name": "pg"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert made.status_code == 201
    listed = _run("user", "list", url=fresh_pg_url).stdout
    assert "admin@localhost" in listed and "yes" in listed


def test_serve_rejects_an_impossible_port_without_a_traceback(tmp_path):
    result = _run("serve", "--port", "99999", url=f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--port" in result.stderr


def test_backup_while_serving_and_a_clean_stop_leaves_the_file_complete(tmp_path):
    db = tmp_path / "noclash.db"
    url = f"sqlite:///{db}"
    with _serving(url) as (proc, base):
        assert proc.stdout is not None
        token = proc.stdout.readline().strip()
        headers = {"Authorization": f"Bearer {token}"}
        for i in range(20):
            made = httpx.post(f"{base}/api/chatbots", json={"name": f"b{i}"}, headers=headers)
            assert made.status_code == 201
        copy = tmp_path / "backup.db"
        result = _run("backup", str(copy), url=url)
        assert result.returncode == 0, result.stderr
        assert _run("backup", str(copy), url=url).returncode == 1  # never overwrites
        with sqlite3.connect(copy) as conn:
            assert conn.execute("SELECT count(*) FROM chatbots").fetchone() == (20,)
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # After SIGINT, the main file alone holds everything (nothing is left only in the WAL).
    lone = tmp_path / "lone.db"
    shutil.copyfile(db, lone)
    with sqlite3.connect(lone) as conn:
        assert conn.execute("SELECT count(*) FROM chatbots").fetchone() == (20,)


def test_backup_of_postgresql_says_what_to_use(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite backs up itself (see the test above)")
    result = _run("backup", "/tmp/never-written.dump", url=database_url)
    assert result.returncode == 2
    assert "pg_dump" in result.stderr and not Path("/tmp/never-written.dump").exists()


def test_serve_with_workers_shares_one_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    with _serving(url, "--workers", "2") as (proc, base):
        assert proc.stdout is not None
        token = proc.stdout.readline().strip()
        headers = {"Authorization": f"Bearer {token}"}

        def create(i: int) -> int:
            return httpx.post(
                f"{base}/api/chatbots", json={"name": f"w{i}"}, headers=headers, timeout=30
            ).status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(create, range(64)))
        assert codes == [201] * 64
        listed = httpx.get(f"{base}/api/chatbots?limit=200", headers=headers).json()["items"]
        assert len({b["public_token"] for b in listed}) == 64
        workers = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(workers) >= 2, workers  # uvicorn's supervisor and its two workers
