"""Stopping a child process: asked first, killed only if it does not go (bench and tests)."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def wait_or_kill(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Wait ``timeout`` seconds for ``proc`` (already told to stop) to end; then kill it."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Send ``sig`` to ``proc`` if it still runs, and wait for it (killed after ``timeout``)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    wait_or_kill(proc, timeout)


__all__ = ["stop", "wait_or_kill"]
