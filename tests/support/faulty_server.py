"""The real app in a process of its own that ``kill -9``s itself at a chosen instant.

    NOCLASH_TEST_KILL_AT=committed:chatbots \\
        python -m tests.support.faulty_server --database-url URL --port PORT

Without ``NOCLASH_TEST_KILL_AT`` it is a plain server (the "restarted" process). With it,
the process sends itself SIGKILL (no cleanup, no rollback, no response: what a crash or an
OOM kill does) at one instant of the first transaction that inserts into ``<table>``:

- ``statement``: right after the INSERT into ``<table>`` has executed, before the commit;
- ``commit``: when that transaction's COMMIT is about to be sent (for a keyed create: after
  its answer was stored in the key's row);
- ``committed``: right after the database acknowledged that COMMIT, before any answer
  leaves the process.

Why SQLAlchemy engine events rather than hook calls in noclash's code: the instants are
defined at the database boundary, exactly where a crash decides what survives, and they
hold for every route and for keyed and unkeyed requests alike without a line of test
machinery in the product (nothing there can be left enabled by accident). ``statement``
and ``commit`` are the engine's own ``after_cursor_execute`` and ``commit`` events;
``committed`` wraps the dialect's ``do_commit``, the call that sends COMMIT to the driver.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from bench.processes import stop
from sqlalchemy import event
from sqlalchemy.engine import Engine

from noclash.api.app import create_app
from noclash.config import Settings
from noclash.db.engine import create_engine

ENV = "NOCLASH_TEST_KILL_AT"
POINTS = ("statement", "commit", "committed")
ROOT = Path(__file__).resolve().parents[2]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _raw(connection: Any) -> int:
    """The identity of the driver's connection behind a pool proxy (or of itself)."""
    return id(getattr(connection, "dbapi_connection", connection))


def install(engine: Engine, point: str, table: str) -> None:
    """Arm the kill at ``point`` of the first transaction that inserts into ``table``."""
    if point not in POINTS:
        raise ValueError(f"{point!r} is not one of {POINTS}")
    inserts = re.compile(rf"\bINSERT INTO {re.escape(table)}\b", re.IGNORECASE)
    armed: set[int] = set()  # DBAPI connections whose open transaction inserted

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if inserts.search(statement):
            if point == "statement":
                _die()
            armed.add(_raw(conn.connection))

    @event.listens_for(engine, "commit")
    def _commit(conn: Any) -> None:
        if point == "commit" and _raw(conn.connection) in armed:
            _die()

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Any) -> None:
        armed.discard(_raw(conn.connection))

    do_commit = engine.dialect.do_commit

    def commit_then_die(connection: Any) -> None:
        do_commit(connection)
        if _raw(connection) in armed:
            armed.discard(_raw(connection))
            if point == "committed":
                _die()

    engine.dialect.do_commit = commit_then_die  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    settings = Settings(database_url=args.database_url)
    engine = create_engine(settings.sqlalchemy_url, settings)
    if fault := os.environ.get(ENV):
        point, _, table = fault.partition(":")
        install(engine, point, table)
    app = create_app(settings, engine=engine)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off"
    )
    uvicorn.Server(config).run()


@dataclass
class Served:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_killed(self, timeout: float = 30) -> None:
        """Wait for the process to have killed itself (SIGKILL, exit status -9)."""
        code = self.process.wait(timeout=timeout)
        if code != -signal.SIGKILL:
            raise AssertionError(f"exit status {code}, not SIGKILL: {self.log.read_text()}")


@contextmanager
def serving(
    database_url: str, log: Path, *, kill_at: str | None = None, port: int | None = None
) -> Iterator[Served]:
    """Run ``python -m tests.support.faulty_server`` on ``port`` (default: a free one)
    until the block ends; a process restarted on the same port serves the same URL."""
    from tests.support.server import free_port

    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if kill_at:
        env[ENV] = kill_at
    command = [sys.executable, "-m", "tests.support.faulty_server"]
    command += ["--database-url", database_url, "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited at start: {log.read_text()}")
            try:
                if httpx.get(f"{served.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {log.read_text()}")
            time.sleep(0.05)
        yield served
    finally:
        stop(process)


if __name__ == "__main__":
    main()
