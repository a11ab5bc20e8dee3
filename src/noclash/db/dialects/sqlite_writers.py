"""SQLite: the writers of one engine queue for the write lock in the process, then take it.

SQLite has one write lock per database file. A ``BEGIN IMMEDIATE`` that finds it taken
does not wait in a queue: its busy handler sleeps and tries again, 1, 2, 5, 10, 15, 20, 25,
25, 25, 50, 50 and then 100 ms at a time, until the busy timeout. While a waiter sleeps
the lock is often free, and whoever asks at that moment takes it: usually the thread that
just committed, which is still running. So with many threads on one engine the lock sits
idle between transactions, a few threads write over and over, and the others wait in
ever longer sleeps (a p99 of 674 ms at 32 concurrent inbound requests, for 5 ms of work).

Here the writing transactions of one engine first take a :class:`threading.Lock` of that
engine (waiting on it wakes a waiter the moment it is released, without a sleep), then
``BEGIN IMMEDIATE``; the lock is released after the COMMIT or ROLLBACK. It is a queue, not
the guarantee: SQLite's write lock still serialises every writer, and other processes and
other engines on the same file still meet this one at that lock, with the busy timeout.
Measured on 2 cores (``noclash bench --scenario events``, 32 clients posting inbound
messages over HTTP, the case run alone): 187 -> 401-448 messages per second with events
on, and a p99 of 674 -> 137-163 ms; 64 writers delivering to one customer at once
(``--scenario active``), 0.54x -> 4.5x-4.8x the seed's checks.

A waiter waits on the queue at most the busy timeout, then fails as a busy database
does (``database is locked``, SQLITE_BUSY); with a busy timeout of 0 it does not wait.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import ClassVar

# What SQLite answers when its busy timeout runs out: the same error for the queue's.
_BUSY = 5  # SQLITE_BUSY


class QueuedConnection(sqlite3.Connection):
    """A sqlite3 connection whose writing transactions take its engine's queue first.

    Use a subclass made by :func:`connection_class` (one per engine: its own lock) as the
    ``factory`` of :func:`sqlite3.connect`. The engine's ``begin`` event calls
    :meth:`take_queue` before it sends ``BEGIN IMMEDIATE`` (and :meth:`give_back` if that
    fails); COMMIT, ROLLBACK and closing the connection give the queue back.
    """

    queue: ClassVar[threading.Lock]
    wait_seconds: ClassVar[float]
    _holding: bool = False

    def take_queue(self) -> None:
        """Wait for this engine's other writers, at most the busy timeout; then fail as
        SQLite's busy timeout does (``database is locked``)."""
        wait = self.wait_seconds
        taken = self.queue.acquire(timeout=wait) if wait > 0 else self.queue.acquire(False)
        if not taken:
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = _BUSY  # type: ignore[attr-defined]
            error.sqlite_errorname = "SQLITE_BUSY"  # type: ignore[attr-defined]
            raise error
        self._holding = True

    def give_back(self) -> None:
        """Release the queue if this connection holds it (any number of times)."""
        if self._holding:
            self._holding = False
            self.queue.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_back()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_back()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_back()

    def __del__(self) -> None:
        # A connection dropped without close() (its pool normally closes it) must not
        # leave the queue taken for ever.
        self.give_back()


def connection_class(wait_seconds: float) -> type[QueuedConnection]:
    """A :class:`QueuedConnection` class with a queue of its own, for one engine's
    connections; a waiter gives up after ``wait_seconds`` (the busy timeout)."""
    return type(
        "EngineQueuedConnection",
        (QueuedConnection,),
        {"queue": threading.Lock(), "wait_seconds": wait_seconds},
    )


__all__ = ["QueuedConnection", "connection_class"]
