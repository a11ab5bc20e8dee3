"""``noclash serve`` in a subprocess, as an operator runs it: a real process on a real socket.

The connection bounds live in the protocol ``noclash serve`` gives uvicorn
(:mod:`noclash.serving`), not in the app, so tests of them cannot use the in-thread
``live_server``. The server's stdout and stderr go to files, so a test can read what it
logged while it runs (a pipe nobody reads would block the server once full).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from bench.processes import stop

from tests.support.server import free_port

NOCLASH = [sys.executable, "-m", "noclash"]


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str | None:
        """The admin token printed on an empty database (None if another process won)."""
        lines = self.stdout_path.read_text().splitlines()
        return lines[0].strip() if lines and lines[0].startswith("nc_") else None

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def open_fds(self) -> int:
        """File descriptors the server process holds now (Linux /proc)."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        stop(self.proc, signal.SIGINT, timeout=30)


@contextmanager
def serving(
    url: str,
    workdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Served]:
    """``noclash serve`` on ``url`` with ``env`` added to the environment; yields it ready
    (on ``port``, or a free one)."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    stem = workdir / f"serve-{port}-{time.monotonic_ns()}"
    out, err = stem.with_suffix(".out"), stem.with_suffix(".err")
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [*NOCLASH, "serve", "--port", str(port), *args],
            env=os.environ | {"NOCLASH_DATABASE_URL": url} | (env or {}),
            stdout=stdout,
            stderr=stderr,
        )
    served = Served(proc, port, out, err)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{served.base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, served.stderr()
            assert time.monotonic() < deadline, "server did not become ready:\n" + served.stderr()
            time.sleep(0.1)
        yield served
    finally:
        served.stop()
