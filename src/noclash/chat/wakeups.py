"""Wake-ups: telling live readers, in this process and in others, that events committed.

A live stream reads the events table (:mod:`noclash.chat.events`): the table is the truth,
and a reader that re-read it every few seconds would miss nothing. Wake-ups only make it
look *now*. One :class:`Hub` per process (the app keeps it on ``app.state.hub``; the
dispatcher of ``noclash worker`` has its own) does three things:

1. **Local.** :meth:`Hub.committed`, called after a commit that recorded events (with the
   chatbots :func:`~noclash.chat.events.collecting` gathered), wakes this process's
   subscribers whose chatbots are among them. A subscriber's wake-up is one flag: many
   commits before it looks are one look.
2. **Out, on PostgreSQL** (:attr:`~noclash.db.dialects.base.Dialect.supports_listen_notify`).
   The same call queues the chatbot ids for one sender thread, which sends
   ``NOTIFY noclash_events`` with them (``*`` for "anything") from a session of its own in
   autocommit, at most once per :data:`NOTIFY_INTERVAL`: everything committed meanwhile
   shares the next one. Never inside a writer's transaction: a transaction that has
   notified takes a lock global to the database at commit (PostgreSQL's notification
   queue), held until its commit is durable, which would serialise every notifying commit
   of every process behind one another's disk flushes. Here each process's notifies are
   their own tiny transactions, a few hundred per second at most.
3. **In, on PostgreSQL.** One listener thread per process holds a session of its own with
   ``LISTEN noclash_events`` and wakes local subscribers on each notification from another
   process (its own are skipped: they woke everyone locally already). After an error it
   reconnects with backoff and then wakes everyone, since what was notified meanwhile is
   lost.

4. **Dispatchers.** A commit that queued a delivery (a reply, an event for a bot's
   webhook, one queued again: :attr:`~noclash.chat.events.Recorded.queued`) also wakes the
   dispatchers (:meth:`Hub.when_queued`): this process's at once, and on PostgreSQL those
   of the other processes, ``noclash worker`` included, through the same NOTIFY, whose
   payload then starts with ``+``. A customer's message reaches a bot, and a reply the
   customer, without waiting for a dispatcher's poll.

Readers also re-read every ``NOCLASH_STREAM_REREAD_SECONDS`` without being woken, so a
notification lost in a reconnect costs at most that much latency, and several processes
on one SQLite file (which has no notifications) see each other's events that late.

Threads start on first use, not with the app: test servers run without a lifespan, and a
process that never streams never opens a listening session. :meth:`Hub.close` stops them
(the app's lifespan calls it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from uuid import UUID

from sqlalchemy.engine import Engine

from noclash.chat import events
from noclash.db.dialects import dialect_for
from noclash.db.dialects.base import NotificationSession

log = logging.getLogger("noclash.wakeups")

CHANNEL = "noclash_events"
# At most one NOTIFY per process per this many seconds; the first after a quiet spell
# goes out at once.
NOTIFY_INTERVAL = 0.005
# More chatbots than this in one NOTIFY become "*" (37 bytes each: under 4,000 bytes,
# half PostgreSQL's 8,000-byte payload limit).
MAX_PAYLOAD_IDS = 100
EVERYTHING = "*"
# A payload's first character when a commit it covers queued a delivery.
QUEUED = "+"
# How long the listener waits for a notification before it looks whether it must stop,
# and how often it proves its session alive (a LISTEN again: a round trip).
LISTEN_POLL_SECONDS = 0.5
LISTEN_PROBE_SECONDS = 30.0
# Reconnection backoff of the sender and the listener: doubling from the first to the last.
BACKOFF_SECONDS = (0.1, 5.0)

ChatbotIds = frozenset[UUID] | None  # None: any chatbot


def payload(ids: ChatbotIds, queued: bool = False) -> str:
    """A NOTIFY payload: ``+`` if a delivery was queued, then the chatbot ids,
    comma-separated, or ``*`` (none: only a delivery queued)."""
    head = QUEUED if queued else ""
    if ids is None or len(ids) > MAX_PAYLOAD_IDS:
        return head + EVERYTHING
    return head + ",".join(sorted(str(i) for i in ids))


def parse(text: str) -> tuple[ChatbotIds, bool]:
    """The chatbots of a payload (None, everyone, for ``*`` or anything not understood)
    and whether a delivery was queued."""
    queued = text.startswith(QUEUED)
    text = text.removeprefix(QUEUED)
    if text == EVERYTHING:
        return None, queued
    try:
        ids = frozenset(UUID(part) for part in text.split(",") if part)
    except ValueError:
        return None, queued
    return (ids if ids or queued else None), queued


class _Outage:
    """The failures of a background thread's notification session, counted until it works
    again. The sender and the listener share this policy: one warning when an outage
    starts (not one per attempt), a pause before each retry doubling through
    :data:`BACKOFF_SECONDS`, and one INFO line with the count when it ends."""

    def __init__(self, lost: str, back: str) -> None:
        self._lost = lost  # a log format: the channel, then the error
        self._back = back  # a log format: the channel, then the number of failures
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        """Count a failure (the first of an outage is logged); how long to pause."""
        self.failures += 1
        if self.failures == 1:
            log.warning(self._lost, CHANNEL, _short(exc))
        first, last = BACKOFF_SECONDS
        return min(last, first * 2 ** (self.failures - 1))

    def ended(self) -> None:
        """The session works (again): log the end of the outage, if there was one."""
        if self.failures:
            log.info(self._back, CHANNEL, self.failures)
            self.failures = 0


class Subscription:
    """One reader's wake-up flag, waited on in its event loop; woken from any thread."""

    def __init__(self, chatbots: ChatbotIds, loop: asyncio.AbstractEventLoop) -> None:
        self.chatbots = chatbots
        self._loop = loop
        self._event = asyncio.Event()
        self._scheduled = False

    def wants(self, ids: ChatbotIds) -> bool:
        return ids is None or self.chatbots is None or not self.chatbots.isdisjoint(ids)

    def wake(self) -> None:
        """Make the next (or current) :meth:`wait` return at once. Any thread; a wake-up
        already on its way to the loop is not sent twice."""
        if self._scheduled:
            return
        self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        self._scheduled = False
        self._event.set()

    def clear(self) -> None:
        """Forget past wake-ups: call it *before* reading, so one that comes during the
        read makes the next wait return at once."""
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """True when woken, False when ``timeout`` seconds passed without a wake-up."""
        if self._event.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class Hub:
    """A process's wake-ups (see the module docstring). Thread-safe."""

    def __init__(self, engine: Engine, *, notify: bool = True) -> None:
        self.engine = engine
        self._dialect = dialect_for(engine)
        self._across = notify and self._dialect.supports_listen_notify
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        # Called after a commit that queued a delivery, here or elsewhere (dispatchers).
        self._on_queued: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        # The sender's queue: chatbot ids not yet notified (None in it: everything).
        self._wanted = threading.Condition(threading.Lock())
        self._pending: set[UUID] = set()
        self._pending_all = False
        self._pending_queued = False
        self._has_pending = False
        self._sender: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._sender_session: int | None = None
        # Sequencing shared by this process's readers (sequence()).
        self._sequencing = threading.Lock()
        self._sequence_runs = 0
        # Counters, for tests and the benchmark.
        self.notifies_sent = 0
        self.notifications_received = 0

    @property
    def across_processes(self) -> bool:
        """Whether commits here wake readers in other processes at once (NOTIFY)."""
        return self._across

    # -- writers (any thread) ----------------------------------------------------------------
    def committed(self, chatbot_ids: Iterable[UUID] | None = None) -> None:
        """Events of ``chatbot_ids`` (None: of any chatbot) were just committed: wake the
        readers. Call it after the commit, never before (a reader woken early reads the
        table before the events are in it, and sleeps)."""
        queued = isinstance(chatbot_ids, events.Recorded) and chatbot_ids.queued
        if queued:
            self._wake_dispatchers()
        ids = None if chatbot_ids is None else frozenset(chatbot_ids)
        if ids is not None and not ids and not queued:
            return
        if ids is None or ids:
            self._wake_local(ids)
        if self._across and not self._stopping.is_set():
            self._queue(ids, queued)

    @contextmanager
    def when_queued(self, callback: Callable[[], None]) -> Iterator[None]:
        """Within the block, ``callback()`` (thread-safe, cheap: a dispatcher's ``wake``)
        follows every commit that queued a delivery: reported here, or on PostgreSQL by
        another process (a listening session is kept for that). It also follows a
        reconnection of that session, since what was notified meanwhile is lost."""
        with self._lock:
            self._on_queued.append(callback)
            self._listen()
        try:
            yield
        finally:
            with self._lock:
                self._on_queued.remove(callback)

    def _wake_dispatchers(self) -> None:
        with self._lock:
            callbacks = tuple(self._on_queued)
        for callback in callbacks:
            callback()

    def _queue(self, ids: ChatbotIds, queued: bool = False) -> None:
        with self._wanted:
            self._pending_queued = self._pending_queued or queued
            if ids is None or len(self._pending) + len(ids) > MAX_PAYLOAD_IDS:
                self._pending_all = True
                self._pending.clear()
            elif not self._pending_all:
                self._pending.update(ids)
            self._has_pending = True
            if self._sender is None:
                self._sender = self._start(self._send_loop, "noclash-notify")
            self._wanted.notify()

    def _take(self) -> str:
        """The payload of everything pending, which is then no longer pending (the caller
        holds ``_wanted``)."""
        ids = None if self._pending_all else frozenset(self._pending)
        text = payload(ids, self._pending_queued)
        self._pending.clear()
        self._pending_queued = False
        self._pending_all = False
        self._has_pending = False
        return text

    def _send_loop(self) -> None:
        session: NotificationSession | None = None
        outage = _Outage(
            "could not send NOTIFY %s (%s); retrying, and readers in other processes re-read "
            "meanwhile",
            "sending NOTIFY %s again after %d failures",
        )
        try:
            while True:
                with self._wanted:
                    while not self._has_pending and not self._stopping.is_set():
                        self._wanted.wait()
                    if not self._has_pending:
                        return
                    text = self._take()
                try:
                    if session is None:
                        session = self._dialect.notification_session(self.engine)
                        self._sender_session = session.session_id
                    session.send(CHANNEL, text)
                except Exception as exc:  # a background thread must outlive any error
                    pause = outage.failed(exc)
                    session = _close(session)
                    # Its id may be another process's once the server has restarted.
                    self._sender_session = None
                    with self._wanted:  # everything again, once a session is back
                        self._pending_all = True
                        self._pending_queued = True
                        self._has_pending = True
                    if self._stopping.wait(pause):
                        return
                    continue
                outage.ended()
                self.notifies_sent += 1
                # Coalescing: commits during this pause share the next NOTIFY. A stop
                # ends the pause; what is pending then still goes out above.
                self._stopping.wait(NOTIFY_INTERVAL)
        finally:
            _close(session)

    # -- readers (their event loop) --------------------------------------------------------
    @contextmanager
    def subscribe(self, chatbots: Iterable[UUID] | None) -> Iterator[Subscription]:
        """A wake-up flag for a reader of ``chatbots`` (None: any chatbot) while the block
        runs; call it on the reader's event loop."""
        subscription = Subscription(
            None if chatbots is None else frozenset(chatbots), asyncio.get_running_loop()
        )
        with self._lock:
            self._subscribers.add(subscription)
            self._listen()
        try:
            yield subscription
        finally:
            with self._lock:
                self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def sequence(self) -> None:
        """:func:`~noclash.chat.events.sequence_all`, once for every reader that needs it
        at about the same time (a worker thread's call).

        A reader needs a run that *starts* after its wake-up. One that finds a run going
        waits for it; then, if another run started after its need, that run covered it
        and it returns; otherwise it runs one itself. Woken together, a hundred streams of
        this process make one sequencing transaction, not a hundred.
        """
        needed_after = self._sequence_runs
        with self._sequencing:
            if self._sequence_runs > needed_after:
                return
            self._sequence_runs += 1
            events.sequence_all(self.engine)

    def _listen(self) -> None:
        """Start the listener, if there is none yet and one is of use (the caller holds
        ``_lock``)."""
        if self._across and self._listener is None and not self._stopping.is_set():
            self._listener = self._start(self._listen_loop, "noclash-listen")

    def _wake_local(self, ids: ChatbotIds) -> None:
        with self._lock:
            subscribers = tuple(self._subscribers)
        for subscription in subscribers:
            if subscription.wants(ids):
                subscription.wake()

    def _listen_loop(self) -> None:
        outage = _Outage(
            "lost LISTEN %s (%s); reconnecting, and readers re-read every few seconds meanwhile",
            "listening on %s again after %d failures",
        )
        while not self._stopping.is_set():
            session: NotificationSession | None = None
            pause = 0.0
            try:
                session = self._dialect.notification_session(self.engine)
                session.listen(CHANNEL)
                outage.ended()
                # Notifications sent while nobody listened are lost: everyone looks now.
                self._wake_local(None)
                self._wake_dispatchers()
                self._receive(session)
            except Exception as exc:  # a background thread must outlive any error
                pause = outage.failed(exc)
            finally:
                _close(session)
            if pause:
                self._stopping.wait(pause)

    def _receive(self, session: NotificationSession) -> None:
        probed = 0.0
        while not self._stopping.is_set():
            for sender, text in session.receive(LISTEN_POLL_SECONDS):
                if sender == self._sender_session:
                    continue  # this process's own: its readers were woken already
                self.notifications_received += 1
                ids, queued = parse(text)
                if ids is None or ids:
                    self._wake_local(ids)
                if queued:
                    self._wake_dispatchers()
            probed += LISTEN_POLL_SECONDS
            if probed >= LISTEN_PROBE_SECONDS:
                # A session the network dropped without a word would otherwise wait for
                # notifications forever: a round trip proves it alive, or raises.
                session.listen(CHANNEL)
                probed = 0.0

    # -- life --------------------------------------------------------------------------------
    def _start(self, target: object, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        return thread

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads (what is pending is notified first, if the database lets it)."""
        self._stopping.set()
        with self._wanted:
            self._wanted.notify_all()
        for thread in (self._sender, self._listener):
            if thread is not None:
                thread.join(timeout)


def _close(session: NotificationSession | None) -> None:
    if session is not None:
        with contextlib.suppress(Exception):
            session.close()
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["CHANNEL", "Hub", "Subscription", "parse", "payload"]
