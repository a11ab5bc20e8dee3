"""The CLI as a user runs it: real processes, real databases."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import sqlalchemy as sa

from noclash.db.engine import create_engine
from noclash.db.tables import users
from noclash.unique.ids import token_hash
from tests.support.server import free_port

NOCLASH = [sys.executable, "-m", "noclash"]


def _run(*args: str, url: str) -> subprocess.CompletedProcess:
    env = os.environ | {"NOCLASH_DATABASE_URL": url}
    return subprocess.run([*NOCLASH, *args], env=env, capture_output=True, text=True, timeout=120)


def test_user_create_prints_only_the_token_and_stores_its_hash(database_url):
    result = _run("user", "create", "Me@Example.com", url=database_url)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert re.fullmatch(r"nc_[0-9a-f]{32}", token)
    assert result.stdout == token + "\n"
    engine = create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.email == "me@example.com")).one()
    engine.dispose()
    assert row.token_hash == token_hash(token) and token not in row.token_hash
    again = _run("user", "create", "me@example.com", url=database_url)
    assert again.returncode == 1 and again.stdout == ""
    assert "already exists" in again.stderr


def test_db_upgrade_and_current(fresh_pg_url):
    assert _run("db", "current", url=fresh_pg_url).returncode == 1
    up = _run("db", "upgrade", url=fresh_pg_url)
    assert up.returncode == 0, up.stderr
    current = _run("db", "current", url=fresh_pg_url)
    assert current.returncode == 0 and "(head: " in current.stdout


def test_serve_migrates_an_empty_sqlite_file_and_prints_an_admin_token(tmp_path):
    port = free_port()
    url = f"sqlite:///{tmp_path / 'first.db'}"
    env = os.environ | {"NOCLASH_DATABASE_URL": url}
    proc = subprocess.Popen(
        [*NOCLASH, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        token = proc.stdout.readline().strip()
        assert re.fullmatch(r"nc_[0-9a-f]{32}", token), token
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        r = httpx.post(
            f"{base}/api/chatbots",
            json={"name": "first"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201
    finally:
        proc.terminate()
        rest, errors = proc.communicate(timeout=20)
    # The token is the only stdout, whatever was served: the access log goes to stderr
    # (`serve > admin-token.txt` grew a line per request).
    assert rest == ""
    assert '"POST /api/chatbots HTTP/1.1" 201' in errors
    # A second start finds users and creates no new admin.
    proc = subprocess.Popen(
        [*NOCLASH, "serve", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert out.strip() == ""


def test_the_admin_can_be_made_before_the_first_start_on_sqlite(tmp_path):
    """docs/deployment.md: `noclash user create --admin` before the first start. On an
    embedded database that does not exist yet it creates and migrates it, as serve would
    (it said the database does not exist)."""
    url = f"sqlite:///{tmp_path / 'first.db'}"
    made = _run("user", "create", "--admin", "ops@example.com", url=url)
    assert made.returncode == 0, made.stderr
    assert re.fullmatch(r"nc_[0-9a-f]{32}", made.stdout.strip())
    assert "ops@example.com\tyes" in _run("user", "list", url=url).stdout


def test_serve_refuses_an_unmigrated_postgresql(fresh_pg_url):
    result = subprocess.run(
        [*NOCLASH, "serve", "--port", str(free_port())],
        env=os.environ | {"NOCLASH_DATABASE_URL": fresh_pg_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "noclash db upgrade" in result.stderr
