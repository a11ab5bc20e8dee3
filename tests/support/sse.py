"""A Server-Sent Events client for tests: a real HTTP stream read in a thread.

It parses the wire format as the SSE specification says (``field: value`` lines, an
empty line ends an event, a line starting with ``:`` is a comment) and keeps what it
read, with the time each event arrived, so a test can wait for events, close the
connection abruptly, and reconnect with ``Last-Event-ID`` as a browser would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    id: str | None
    event: str | None
    data: Any
    received_at: float


@dataclass
class StreamReader:
    """``GET path`` as a stream, read in a daemon thread until :meth:`close`."""

    base_url: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    content_type: str | None = None
    body: bytes = b""
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: bool = False
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(60, read=120))
        self._opened = threading.Event()
        self._changed = threading.Condition()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def open(self, timeout: float = 20) -> StreamReader:
        self._thread.start()
        assert self._opened.wait(timeout), "the stream did not answer"
        if self.error is not None:
            raise self.error
        return self

    def _run(self) -> None:
        try:
            with self._client.stream(
                "GET", self.path, headers=self.headers, params=self.params
            ) as response:
                self._response = response
                self.status = response.status_code
                self.content_type = response.headers.get("content-type")
                if response.status_code != 200:
                    self.body = response.read()
                    self._opened.set()
                    return
                self._opened.set()
                self._parse(response)
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            if not self._closing:
                self.error = exc
        finally:
            self._opened.set()
            with self._changed:
                self.ended = True
                self._changed.notify_all()

    _closing = False

    def _parse(self, response: httpx.Response) -> None:
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in response.iter_lines():
            if line == "":
                if data or fields:
                    self._dispatch(fields, data)
                fields, data = {}, []
            elif line.startswith(":"):
                with self._changed:
                    self.comments.append(line[1:].strip())
                    self._changed.notify_all()
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value

    def _dispatch(self, fields: dict[str, str], data: list[str]) -> None:
        text = "\n".join(data)
        event = Event(fields.get("id"), fields.get("event"), json.loads(text) if text else None,
                      time.monotonic())  # fmt: skip
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait(self, predicate: Callable[[StreamReader], bool], timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ended:
                    return predicate(self)
                self._changed.wait(min(remaining, 0.2))
        return True

    def wait_for(self, count: int, timeout: float = 20) -> list[Event]:
        """The first ``count`` events (fewer if they did not come within ``timeout``)."""
        self.wait(lambda r: len(r.events) >= count, timeout)
        return list(self.events[:count])

    @property
    def ids(self) -> list[str | None]:
        return [e.id for e in self.events]

    def close(self) -> None:
        """Drop the connection at once (the client going away): the socket is shut down
        under the reading thread, which a close() alone would not wake."""
        self._closing = True
        if self._response is not None:
            network = self._response.extensions.get("network_stream")
            sock = network.get_extra_info("socket") if network is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the stream reader did not stop"
        self._client.close()

    def __enter__(self) -> StreamReader:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()


def stream(
    base_url: str,
    path: str,
    *,
    token: str | None = None,
    last_event_id: str | None = None,
    params: dict[str, str] | None = None,
) -> StreamReader:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return StreamReader(base_url, path, headers=headers, params=params or {})
