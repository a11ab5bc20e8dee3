"""A real Chromium for the page tests: Debian's ``chromium`` driven by Playwright for Python.

Playwright's own browser download cannot work offline, so the tests launch the system's
Chromium by path (``executable_path``): ``NOCLASH_CHROMIUM`` when set, else ``chromium`` on
the PATH. ``make test`` installs it with apt-get when it is missing and it runs as root,
and otherwise stops with a message saying how. The suite never skips these tests: a
missing browser is a failure with the same message.

The flags are those a machine with a closed network needs (no background requests to
Google's services, no QUIC), plus ``--no-sandbox`` for a root user.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
HOW = (
    "the browser tests need Debian's chromium: `apt-get install chromium` (make test does "
    "it when run as root), or set NOCLASH_CHROMIUM to a Chromium binary"
)


def chromium_path() -> str:
    path = os.environ.get("NOCLASH_CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).exists():
        raise RuntimeError(HOW)
    return path


class _Page(BaseHTTPRequestHandler):
    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.html)))
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def other_site(html: str) -> Iterator[str]:
    """A page served from another origin (another loopback port): a customer's site."""
    handler = type("Page", (_Page,), {"html": html.encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def embed(app_url: str, public_token: str) -> str:
    """A customer's page with the documented snippet."""
    return (
        "<!doctype html><html><head><title>A shop</title></head><body><h1>A shop</h1>"
        f'<script src="{app_url}/widget.js" data-token="{public_token}" async></script>'
        "</body></html>"
    )


def eventually(check, timeout: float = 5.0, every: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``check`` until it returns a truthy value; that value (AssertionError after)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {check}")
        time.sleep(every)


__all__ = ["ARGS", "HOW", "chromium_path", "embed", "eventually", "other_site"]
