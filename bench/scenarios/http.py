"""Scenario 4, http: ``POST /api/chatbots`` through uvicorn, from another process.

Two servers run side by side on free loopback ports, each in its own process
(:mod:`bench.serve`): noclash's real app and a minimal FastAPI endpoint performing the
same single INSERT. Each round, for each server in turn, a separate load-generating
process (:mod:`bench.load`, one per case) keeps ``writers`` keep-alive connections busy,
bounded by the round's time and request budgets, and reports status codes and latencies.

Statement counts are not collected here (the statements run in the server processes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

from bench.databases import noclash_engine
from bench.harness import CaseSpec, Config, Contender, RoundResult
from bench.processes import stop, wait_or_kill
from bench.scenarios import Env
from noclash.chat.users import create_user

CONTENDERS = ("noclash", "minimal")
ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


@contextmanager
def server(
    kind: str, url: str, log: Path, owner: str | None = None, *, events: bool = True
) -> Iterator[str]:
    """Start ``python -m bench.serve KIND``; yield its base URL; stop it. ``events=False``:
    the same app with events off (the events scenario's limit)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.serve", kind, "--url", url, "--port", str(port)]
    if owner:
        cmd += ["--owner", owner]
    if not events:
        cmd += ["--no-events"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


class LoadGenerator:
    """One load-generating process (``python -m bench.load --serve``) for a whole case.

    It measures one round per request and keeps its keep-alive connections to both servers
    open between rounds, so a round costs its measured time and no process start or
    warm-up.
    """

    def __init__(self, log: Path) -> None:
        self._log = log.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.load", "--serve"], cwd=ROOT, env=_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )  # fmt: skip

    def round(
        self, url: str, token: str | None, writers: int, seconds: float, max_requests: int,
        warmup: int, path: str = "/api/chatbots", body: str | None = None, group: int = 1,
    ) -> RoundResult:
        """One measured round against ``url + path``; ``body`` (default: a chatbot's) may
        be a template of :mod:`bench.load`."""
        request: dict[str, object] = {
            "url": f"{url}{path}", "token": token, "concurrency": writers,
            "seconds": seconds, "max_requests": max_requests, "warmup": warmup,
            "group": group,
        }  # fmt: skip
        if body is not None:
            request["body"] = body
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator failed: {self._log.name}")
        report = json.loads(line)
        kinds: Counter[str] = Counter(
            {f"HTTP {k}": v for k, v in report["statuses"].items() if not k.startswith("2")}
        )
        return RoundResult(
            ok=report["ok"],
            errors=report["errors"],
            elapsed=report["elapsed"],
            latencies_ns=[us * 1000 for us in report["latencies_us"]],
            error_kinds=kinds,
        )

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        wait_or_kill(self._proc, timeout=30)
        self._log.close()


@contextmanager
def _build(env: Env, config: Config, dialect: str, writers: int) -> Iterator[list[Contender]]:
    url = env.databases.noclash_db(dialect)
    engine = noclash_engine(url, 2)
    try:
        user, token = create_user(engine, f"bench-{time.monotonic_ns()}@example.com")
    finally:
        engine.dispose()
    logs = env.databases.workdir
    budget = min(config.max_ops, config.http_max_requests)
    warmup = max(config.warmup_ops, writers * 2)
    with ExitStack() as stack:
        try:
            noclash_url = stack.enter_context(
                server("noclash", url, logs / f"noclash-{dialect}-{writers}.log")
            )
            minimal_url = stack.enter_context(
                server("minimal", url, logs / f"minimal-{dialect}-{writers}.log", str(user.id))
            )

            generator = LoadGenerator(logs / f"load-{dialect}-{writers}.log")
            stack.callback(generator.close)

            def runner(
                base: str, auth: str | None, w: int, seconds: float, _max: int
            ) -> RoundResult:
                return generator.round(base, auth, w, seconds, budget, warmup)

            yield [
                Contender("noclash", "noclash", runner=partial(runner, noclash_url, token),
                          note="POST /api/chatbots of the real app"),
                Contender("minimal", "limit", runner=partial(runner, minimal_url, None),
                          note="one FastAPI endpoint, the same INSERT"),
            ]
        finally:
            stack.close()
            env.databases.drop(url)


def specs(env: Env, config: Config) -> list[CaseSpec]:
    return [
        CaseSpec(
            "http", dialect, writers, "POST /api/chatbots", CONTENDERS,
            partial(_build, env, config, dialect, writers),
        )
        for dialect in env.dialects
        for writers in config.writers
    ]
