"""The real app behind a real uvicorn server on a free loopback port.

Tests talk to it with httpx over TCP: no ASGI transport, no mocked server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from sqlalchemy.engine import Engine

from noclash.api.app import create_app
from noclash.chat.users import create_user
from noclash.config import Settings
from noclash.db.engine import create_engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    base_url: str
    engine: Engine
    settings: Settings
    app: Any
    _clients: list[httpx.Client] = field(default_factory=list)

    def user(self, email: str | None = None) -> str:
        """Create a user and return its bearer token."""
        email = email or f"user-{time.monotonic_ns()}@example.com"
        _user, token = create_user(self.engine, email)
        return token

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=self.base_url, headers=headers, timeout=60, **kwargs)
        self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()


@contextmanager
def start_live_server(database_url: str, **overrides: object) -> Iterator[LiveServer]:
    options: dict[str, object] = {"pool_size": 20, "pool_max_overflow": 40, **overrides}
    settings = Settings(database_url=database_url, **options)  # type: ignore[arg-type]
    engine = create_engine(settings.sqlalchemy_url, settings)
    app = create_app(settings, engine=engine)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", backlog=512
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    live = LiveServer(f"http://127.0.0.1:{port}", engine, settings, app)
    try:
        yield live
    finally:
        live.close()
        server.should_exit = True
        thread.join(timeout=10)
        app.state.hub.close()  # lifespan="off": nobody else stops its threads
        engine.dispose()
