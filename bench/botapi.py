"""``python bench/botapi.py``: a Telegram ``sendMessage`` server for the outbound scenario.

It answers ``POST /bot<token>/sendMessage`` after an ``asyncio.sleep(latency)`` (20 ms in the
benchmark: a platform's answer time, not ours) with the Bot API's success body,
``{"ok": true, "result": {"message_id": N, "date": ..., "chat": {...}, "text": ...}}``.

Why its own process and raw asyncio: on a 2-core machine it must neither share the
measured process's GIL (a server in a thread would slow down the dispatcher it serves) nor
spend more CPU per request than it has to (uvicorn and Starlette cost several times what
this costs). It speaks just enough HTTP/1.1 for httpx: keep-alive connections, a request
line, headers, a Content-Length body. It is run as a script, not as ``-m bench.botapi``
(which would import the whole ``bench`` package first), and imports only the standard
library, so it starts in a few tens of milliseconds.

It is also a chatbot's webhook: ``POST /hook`` answers ``{"ok": true}`` after the same
latency, as a bot would that acknowledges an event (the outbound scenario's webhook case).
It reads nothing but the ``Noclash-Event-Id`` header: noclash's events carry their id
there, and the bare POSTs of the limit an id starting ``limit-``.

What it saw is the benchmark's evidence that nothing was sent twice: ``GET /stats``
answers how many sends it received per text prefix (``reply`` for noclash's deliveries,
``limit`` for the bare POSTs; ``event`` for noclash's events and ``limit`` for the bare
POSTs to the webhook) and how many texts or event ids it received more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 30


class Platform:
    """The server's state: a message id sequence and what it received."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.next_id = 0
        self.by_prefix: Counter[str] = Counter()
        self.seen: set[str] = set()
        self.duplicates = 0

    def send_message(self, body: bytes) -> bytes:
        payload = json.loads(body)
        text = str(payload.get("text", ""))
        self.by_prefix[text.split(" ", 1)[0]] += 1
        if text in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(text)
        self.next_id += 1
        chat = payload.get("chat_id")
        return json.dumps(
            {
                "ok": True,
                "result": {
                    "message_id": self.next_id,
                    "date": int(time.time()),
                    "chat": {"id": chat, "type": "private"},
                    "text": text,
                },
            }
        ).encode()

    def hook(self, event_id: str) -> bytes:
        self.by_prefix["limit" if event_id.startswith("limit-") else "event"] += 1
        key = f"event {event_id}"
        if key in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(key)
        return b'{"ok":true}'

    def stats(self) -> bytes:
        return json.dumps(
            {"received": dict(self.by_prefix), "duplicates": self.duplicates}
        ).encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, target, _version = line.split(b" ", 2)
                length, close, event_id = 0, False, ""
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.partition(b":")
                    key = name.strip().lower()
                    if key == b"content-length":
                        length = int(value.strip())
                    elif key == b"connection" and b"close" in value.lower():
                        close = True
                    elif key == b"noclash-event-id":
                        event_id = value.strip().decode()
                body = await reader.readexactly(length) if length else b""
                if method == b"POST" and target.endswith(b"/sendMessage"):
                    await asyncio.sleep(self.latency)
                    status, out = b"200 OK", self.send_message(body)
                elif method == b"POST" and target == b"/hook":
                    await asyncio.sleep(self.latency)
                    status, out = b"200 OK", self.hook(event_id)
                elif target == b"/stats":
                    status, out = b"200 OK", self.stats()
                elif target == b"/healthz":
                    status, out = b"200 OK", b'{"ok":true}'
                else:
                    status = b"404 Not Found"
                    out = b'{"ok":false,"error_code":404,"description":"Not Found"}'
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(out)).encode() + b"\r\n\r\n" + out
                )
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _serve(port: int, latency: float) -> None:
    platform = Platform(latency)
    server = await asyncio.start_server(platform.handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> bytes:
    """One GET on a fresh connection; the body (the server always sends Content-Length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"platform answered {head[:40]!r}")
    return body


class PlatformProcess:
    """A running ``bench/botapi.py``: its URL and what it received."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def stats(self) -> dict:
        return json.loads(_get(self.port, "/stats"))


@contextmanager
def platform_server(latency: float, log: Path) -> Iterator[PlatformProcess]:
    """Start the platform in its own process; yield it once it answers; stop it."""
    port = free_port()
    from bench.processes import stop  # the parent's side: the script imports no bench

    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, "--port", str(port), "--latency", str(latency)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the platform exited: {log.read_text()[-2000:]}")
            try:
                _get(port, "/healthz")
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    tail = log.read_text()[-2000:]
                    raise RuntimeError(f"the platform did not start: {tail}") from exc
                time.sleep(0.05)
        yield PlatformProcess(port)
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/botapi.py", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds before answering")
    args = parser.parse_args(argv)
    with suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.latency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
