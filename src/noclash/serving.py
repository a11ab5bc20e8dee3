"""Connection bounds of ``noclash serve``: what a slow, idle or greedy client may hold.

The hazard: every open connection holds a file descriptor and some memory, and a process
has a fixed number of descriptors. uvicorn's h11 protocol (read in its source,
``uvicorn/protocols/http/h11_impl.py``, 0.55) bounds less than it seems:

- its only connection timer is keep-alive, armed after a response and cancelled by the
  first byte of the next request, so a connection that sends nothing, or sends its request
  head one byte a second, is held for as long as the client likes;
- the body likewise: the app's ``receive()`` waits for the next chunk without limit, and a
  body the app never reads is drained without limit after the response;
- ``limit_concurrency`` answers 503 only to a request whose head is complete, so
  connections that never complete their head pile up past it;
- ``h11_max_incomplete_event_size`` bounds a head that is still arriving (answered 400),
  not one that arrives in a single read, and nothing bounds the number of header fields;
- a client that does not read its response is waited for without limit: uvicorn's send
  waits for the buffer to drain, and asyncio's ``transport.close()`` (which every timeout
  calls) waits for it to flush before it releases the socket.

:class:`BoundedH11Protocol` adds the missing deadlines to uvicorn's protocol, and
:func:`uvicorn_options` gives ``noclash serve`` (one process or ``--workers``) one set of
uvicorn options. What each bound answers:

============================  ==================================================
the head is not complete      ``NOCLASH_HEADER_TIMEOUT_SECONDS`` after the connection
                              opened or the request's first byte: 408, closed
                              (closed silently if nothing at all was sent)
the body stalls or drags      ``NOCLASH_BODY_IDLE_TIMEOUT_SECONDS`` without a byte, or
                              ``NOCLASH_BODY_TIMEOUT_SECONDS`` in all: 408, closed
idle between requests         ``NOCLASH_KEEP_ALIVE_TIMEOUT_SECONDS``: closed (uvicorn)
the response is not read      ``NOCLASH_SEND_TIMEOUT_SECONDS`` with output waiting in
                              the server's buffer: the connection is aborted
the head is too large         ``NOCLASH_MAX_HEADER_BYTES`` or ``NOCLASH_MAX_HEADERS``
                              fields: 431, closed
too many connections          ``NOCLASH_MAX_CONNECTIONS`` open in this process: the
                              next one is answered 503 and closed at once
============================  ==================================================

The app's own time (a request whose body is complete, waiting for the database) is not
bounded here; the database's timeouts bound it. A wait that is the server's doing does not
count against the client: while uvicorn has paused reading (the app has not taken the body
it has) or the client waits for ``100 Continue``, the body deadlines are pushed back.

Each connection closed by a bound logs one INFO line on ``noclash.serving``.

Why the bounds come from the environment: uvicorn builds one protocol object per
connection from its ``Config``, which carries only uvicorn's own options, and with
``--workers`` it pickles that ``Config`` into every worker process it spawns. So
:class:`BoundedH11Protocol` is importable by name and reads its bounds once per process
from the ``NOCLASH_*`` environment, the same place every worker's app reads its settings
(``noclash.cli:worker_app``); :func:`uvicorn_options` reads the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import json
import logging
import struct
import termios
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import h11
from uvicorn.config import LOGGING_CONFIG, Config
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.server import ServerState

from noclash.api.problems import ProblemType
from noclash.config import Settings

log = logging.getLogger("noclash.serving")


@dataclass(frozen=True, slots=True)
class ConnectionBounds:
    header_timeout: float
    body_timeout: float
    body_idle_timeout: float
    keep_alive_timeout: float
    send_timeout: float
    max_header_bytes: int
    max_headers: int
    max_connections: int
    trusted_proxies: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionBounds:
        return cls(
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            body_idle_timeout=settings.body_idle_timeout_seconds,
            keep_alive_timeout=settings.keep_alive_timeout_seconds,
            send_timeout=settings.send_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_connections=settings.max_connections,
            trusted_proxies=settings.trusted_proxies.strip(),
        )


@cache
def process_bounds() -> ConnectionBounds:
    """This process's bounds, from its environment (see the module docstring for why)."""
    return ConnectionBounds.from_settings(Settings())


def logging_config() -> dict[str, Any]:
    """uvicorn's logging configuration plus noclash's loggers on the same stderr handler.

    Without it ``noclash.*`` records below WARNING go nowhere (Python's last-resort
    handler prints warnings only), and warnings are printed without a level prefix. The
    access log goes to stderr too: stdout is the admin token alone (``noclash serve >
    admin-token.txt``), and uvicorn's default wrote a line there for every request.
    """
    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["loggers"]["noclash"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for :func:`uvicorn.run` that apply the bounds, for one process
    and for ``--workers`` alike."""
    bounds = process_bounds()
    return {
        "http": BoundedH11Protocol,
        # noclash serves no WebSocket: an upgrade is answered as plain HTTP, by the bounded
        # protocol, instead of handing the connection to an unbounded one.
        "ws": "none",
        # The protocol refuses connections past max_connections itself; uvicorn's check
        # (one above, so it never fires first) still bounds requests in flight, which can
        # outnumber connections when clients leave while their requests run.
        "limit_concurrency": bounds.max_connections + 1,
        "timeout_keep_alive": bounds.keep_alive_timeout,
        "h11_max_incomplete_event_size": bounds.max_header_bytes,
        # X-Forwarded-For names the client only when the peer is a trusted proxy.
        "proxy_headers": bool(bounds.trusted_proxies),
        "forwarded_allow_ips": bounds.trusted_proxies or None,
        "log_config": logging_config(),
    }


def _problem(kind: ProblemType, detail: str) -> bytes:
    """The problem+json body of an answer the server makes itself, typed from the same
    registry as the app's (:mod:`noclash.api.problems`)."""
    phrase = STATUS_PHRASES[kind.status].decode()
    body = {"type": kind.uri, "title": phrase, "status": kind.status, "detail": detail}
    return json.dumps(body).encode()


def _raw_response(kind: ProblemType, detail: str, *, retry_after: int | None = None) -> bytes:
    """A whole response written to the socket without h11, for the cases where h11 has no
    request to answer (a head that never completed, a connection refused at accept)."""
    body = _problem(kind, detail)
    status = kind.status
    head = [
        f"HTTP/1.1 {status} {STATUS_PHRASES[status].decode()}",
        "content-type: application/problem+json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Throttled:
    """A warning logged at most once per ``every`` seconds, with the count in between: a
    flood of refused connections must not become a flood of log lines."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.count = 0
        self.next_at = 0.0

    def note(self, message: str, *args: object) -> None:
        self.count += 1
        now = time.monotonic()
        if now >= self.next_at:
            log.warning(message + " (%d since the last report)", *args, self.count)
            self.count = 0
            self.next_at = now + self.every


_refusals = _Throttled()


class _HeadGuard:
    """The ASGI app behind the protocol: a complete head with too many fields or bytes is
    answered 431 before the app sees it (h11 bounds only a head still arriving). It also
    tells the protocol whether the response under way is an event stream (see
    :meth:`BoundedH11Protocol.shutdown`)."""

    def __init__(self, app: Any, bounds: ConnectionBounds, protocol: Any = None) -> None:
        self.app = app
        self.max_headers = bounds.max_headers
        self.max_bytes = bounds.max_header_bytes
        self.protocol = protocol

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            # The request line's target is the path and the query string (ASGI's raw_path
            # holds the path alone): a query of any length was let through.
            query = scope.get("query_string", b"")
            size = (
                len(scope.get("raw_path", b""))
                + (len(query) + 1 if query else 0)
                + sum(len(n) + len(v) + 4 for n, v in headers)
            )
            if len(headers) > self.max_headers or size > self.max_bytes:
                if len(headers) > self.max_headers:
                    detail = f"the request head has more than {self.max_headers} fields"
                else:
                    detail = f"the request head exceeds {self.max_bytes} bytes"
                log.info("%s: %s: 431, closed", _peer(scope.get("client")), detail)
                body = _problem(ProblemType.HEADERS_TOO_LARGE, detail)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            if self.protocol is not None and scope.get("method") == "GET":
                send = self._watching(send)
        await self.app(scope, receive, send)

    def _watching(self, send: Any) -> Any:
        protocol = self.protocol
        protocol.streaming = False

        async def watched(message: Any) -> None:
            if message["type"] == "http.response.start":
                protocol.streaming = any(
                    name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                    for name, value in message.get("headers", ())
                )
            await send(message)

        return watched


class _CountingTransport:
    """A transport that counts the bytes written through it; the rest is delegated."""

    __slots__ = ("count", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.count = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.count += len(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _kernel_queue(transport: Any) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the peer (Linux SIOCOUTQ,
    the same request number as TIOCOUTQ); 0 where the platform does not say."""
    sock = transport.get_extra_info("socket")
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (AttributeError, OSError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


_HEAD, _BODY = "head", "body"


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines for the parts of a request the client controls.

    One timer per connection, re-armed as the request moves on: the head deadline from the
    connection (or the request's first byte) until h11 has the whole head, then the body
    deadlines until h11 has the whole body, then none (the app's time, then uvicorn's
    keep-alive timer).
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.bounds = process_bounds()
        self.app = _HeadGuard(self.app, self.bounds, self)
        # The response under way is an event stream (set by _HeadGuard).
        self.streaming = False
        self._timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        self._head_bytes = 0
        self._body_deadline = 0.0

    # -- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.bounds.max_connections:
            # Refused before it costs anything but this write: never added to the server's
            # connections, closed at once.
            self.transport = transport
            transport.write(
                _raw_response(
                    ProblemType.UNAVAILABLE,
                    "too many connections; retry later",
                    retry_after=1,
                )
            )
            transport.close()
            _refusals.note(
                "refused a connection: %d open (NOCLASH_MAX_CONNECTIONS)",
                len(self.connections),
            )
            return
        super().connection_made(transport)
        # Every writer (uvicorn's request cycles, its 400, the bounds' answers) writes
        # through this, so the send timeout can tell how much the client has taken.
        self._written = _CountingTransport(transport)
        self.transport = self._written  # type: ignore[assignment]
        self._start_head()

    def shutdown(self) -> None:
        """The server is stopping. uvicorn waits for every response under way to end, and
        a live event stream never ends by itself: its connection is closed instead (the
        client reconnects with Last-Event-ID, to a process still serving). The app sees a
        disconnect and its stream ends as if the client had left. Any other response
        ends by itself, as before."""
        cycle = self.cycle
        if self.streaming and cycle is not None and not cycle.response_complete:
            self._close()
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            if self._phase is not _HEAD:
                self._start_head()  # the first byte of a request on a kept-alive connection
            self._head_bytes += len(data)
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Output the client has not taken yet: it gets send_timeout to take it.
        self._watch_output()
        # uvicorn may have parsed a pipelined request from its buffer: follow its state.
        if not self.transport.is_closing():
            self._follow()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_output()

    def _watch_output(self) -> None:
        if self._send_timer is None and self.transport.get_write_buffer_size():
            self._send_timer = self.loop.call_later(
                self.bounds.send_timeout, self._send_stalled, self._acknowledged()
            )

    def _acknowledged(self) -> int:
        """Bytes of output the client has taken: written, minus asyncio's buffer, minus
        the kernel's unacknowledged queue. Both buffers matter: the kernel takes more only
        once much of its queue has drained, and pipelined responses keep adding output,
        so neither buffer alone shrinks steadily while the client reads."""
        unsent = self.transport.get_write_buffer_size() + _kernel_queue(self.transport)
        return self._written.count - unsent

    def _send_stalled(self, taken_before: int) -> None:
        """Output has waited send_timeout: fine if the client took some of it meanwhile
        (a slow reader is still a reader), aborted if it took none."""
        self._send_timer = None
        pending = self.transport.get_write_buffer_size()
        if not pending:
            return  # the kernel has the rest; the socket is no longer held for it
        if self._acknowledged() > taken_before:
            self._watch_output()
            return
        log.info(
            "%s: the client took none of the %d bytes left of its response in %g s: aborted",
            _peer(self.client),
            pending,
            self.bounds.send_timeout,
        )
        # abort(), not close(): close() would wait for this very buffer to flush.
        self.transport.abort()

    # -- the timer ----------------------------------------------------------------------------
    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(max(delay, 0.0), callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start_head(self) -> None:
        self._phase = _HEAD
        self._head_bytes = 0
        self._arm(self.bounds.header_timeout, self._head_timed_out)

    def _follow(self) -> None:
        """Re-arm for the phase h11 is in now."""
        state = self.conn.their_state
        if state is h11.IDLE:
            return  # the head deadline (if a request has begun) keeps running
        if state is h11.SEND_BODY:
            now = self.loop.time()
            if self._phase is not _BODY:
                self._phase = _BODY
                self._body_deadline = now + self.bounds.body_timeout
            remaining = self._body_deadline - now
            self._arm(min(self.bounds.body_idle_timeout, remaining), self._body_timed_out)
            return
        # The whole request is in (or the connection is done): nothing for the client to owe.
        self._phase = None
        self._disarm()

    def _close(self) -> None:
        if self.transport.is_closing():
            return
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()
        self._watch_output()  # close() waits for the buffer: the client gets send_timeout

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._head_bytes:
            timeout = self.bounds.header_timeout
            detail = f"the request head was not complete within {timeout:g} s"
            log.info("%s: %s: 408, closed", _peer(self.client), detail)
            self.transport.write(_raw_response(ProblemType.REQUEST_TIMEOUT, detail))
        # A connection that sent nothing is closed quietly, like an idle kept-alive one
        # (browsers open spare connections they may never use).
        self._close()

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        cycle = self.cycle
        now = self.loop.time()
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The wait is ours (uvicorn stopped reading until the app takes what it has, or
            # has not yet asked for the body): push the deadlines back.
            self._body_deadline = max(self._body_deadline, now + self.bounds.body_idle_timeout)
            self._follow()
            return
        if now >= self._body_deadline - 0.001:
            detail = f"the request body was not complete within {self.bounds.body_timeout:g} s"
        else:
            idle = self.bounds.body_idle_timeout
            detail = f"no byte of the request body arrived for {idle:g} s"
        request = f"{self.scope['method']} {self.scope['path']}" if self.scope else "?"
        if cycle is not None and not cycle.response_started:
            log.info("%s: %s: %s: 408, closed", _peer(self.client), request, detail)
            self._send_408(detail)
            # The app may still be waiting in receive(): it now gets http.disconnect, and
            # anything it sends is dropped (the answer has been given).
            cycle.response_started = cycle.response_complete = True
            cycle.disconnected = True
            cycle.message_event.set()
        else:
            log.info("%s: %s: %s after the response: closed", _peer(self.client), request, detail)
        self._close()

    def _send_408(self, detail: str) -> None:
        body = _problem(ProblemType.REQUEST_TIMEOUT, detail)
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            out = self.conn.send(
                h11.Response(status_code=408, headers=headers, reason=STATUS_PHRASES[408])
            )
            out += self.conn.send(h11.Data(data=body))
            out += self.conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        self.transport.write(out)

    # -- a head too large while it was still arriving ---------------------------------------
    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) <= self.bounds.max_header_bytes:
            super().send_400_response(msg)
            return
        detail = f"the request head exceeds {self.bounds.max_header_bytes} bytes"
        log.info("%s: %s: 431, closed", _peer(self.client), detail)
        body = _problem(ProblemType.HEADERS_TOO_LARGE, detail)
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        out = self.conn.send(
            h11.Response(status_code=431, headers=headers, reason=STATUS_PHRASES[431])
        )
        out += self.conn.send(h11.Data(data=body))
        out += self.conn.send(h11.EndOfMessage())
        self.transport.write(out)
        self.transport.close()
        self._watch_output()


__all__ = [
    "BoundedH11Protocol",
    "ConnectionBounds",
    "logging_config",
    "process_bounds",
    "uvicorn_options",
]
