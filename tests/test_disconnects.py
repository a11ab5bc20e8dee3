"""A client that disconnects mid-request logs no traceback, at most one INFO line.

Against a real ``noclash serve`` with its stderr captured: clients that send half a body
and close (declared and chunked, on routes that parse a model and on the webhooks that
read raw bytes, with and without an ``Idempotency-Key``), clients that close while their
create runs, and clients that reset the connection while the server streams a response.
Before the fix the webhooks' raw-body read raised ``ClientDisconnect`` into the 500
handler, which logged its traceback, and uvicorn logged it a second time.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from pathlib import Path

import httpx

from tests.support.serve import Served, serving


def _send_and_close(served: Served, request: bytes, *, linger: float = 0.3) -> None:
    """Send ``request``, wait ``linger`` seconds, then reset the connection (no FIN)."""
    sock = socket.create_connection(("127.0.0.1", served.port))
    sock.sendall(request)
    time.sleep(linger)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _post(path: str, body: bytes, *, declared: int, headers: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {declared}\r\n\r\n"
    )
    return head.encode() + body


def _key() -> str:
    return f"Idempotency-Key: {uuid.uuid4()}\r\n"


def test_clients_that_leave_mid_request_log_no_traceback(database_url: str, tmp_path: Path):
    with serving(database_url, tmp_path) as served:
        token = served.token
        assert token is not None
        auth = f"Authorization: Bearer {token}\r\n"
        with httpx.Client(base_url=served.base_url, timeout=30) as c:
            bot = c.post(
                "/api/chatbots", json={"name": "d"}, headers={"Authorization": f"Bearer {token}"}
            )
            public = bot.json()["public_token"]
            session = c.post(f"/api/widget/{public}/sessions").json()["session_id"]
        messages = f"/api/widget/{public}/sessions/{session}/messages"

        half = [
            # The webhooks read the raw body themselves (signatures are over its bytes).
            _post("/webhooks/meta", b'{"object": "pa', declared=100),
            _post(f"/webhooks/telegram/{uuid.uuid4()}", b'{"update_id"', declared=100),
            # Routes that parse a model, with and without a key.
            _post("/api/chatbots", b'{"na', declared=100, headers=auth),
            _post("/api/chatbots", b'{"na', declared=100, headers=auth + _key()),
            _post(messages, b'{"te', declared=100),
            _post(messages, b'{"te', declared=100, headers=_key()),
            # A chunked body cut off inside a chunk.
            (
                "POST /api/chatbots HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"{auth}Transfer-Encoding: chunked\r\n\r\n10\r\n"
            ).encode()
            + b'{"name"',
        ]
        for request in half:
            _send_and_close(served, request)

        # Whole requests, the connection reset while the create runs.
        for i in range(10):
            body = b'{"name": "gone %d"}' % i
            _send_and_close(
                served, _post("/api/chatbots", body, declared=len(body), headers=auth), linger=0
            )
            _send_and_close(
                served, _post(f"/api/widget/{public}/sessions", b"", declared=0), linger=0
            )
            text = b'{"text": "gone %d"}' % i
            _send_and_close(served, _post(messages, text, declared=len(text)), linger=0)

        # Reset while the server streams an answer larger than the socket buffers.
        for path in ("/openapi.json", "/docs", "/api/chatbots?limit=200"):
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
            sock.recv(64)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

        time.sleep(1.0)
        # The server is unharmed.
        assert httpx.get(f"{served.base_url}/readyz", timeout=10).status_code == 200
        served.stop()
        stderr = served.stderr()

    assert "Traceback" not in stderr, stderr
    assert "ERROR" not in stderr, stderr
    abandoned = [line for line in stderr.splitlines() if "request abandoned" in line]
    # At most one line per request cut short, and the raw-body reads do say so.
    assert len(abandoned) <= len(half), abandoned
    assert any("/webhooks/meta" in line for line in abandoned), stderr
    assert all(line.startswith("INFO:") for line in abandoned), abandoned
