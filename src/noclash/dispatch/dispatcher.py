"""The dispatcher: claims due deliveries, sends them, settles each outcome, wakes snoozes.

A delivery is a reply to a platform (Messenger, Instagram, Telegram) or an event to its
chatbot's webhook (the bot's own server, :mod:`noclash.channels.webhooks`); both go through
the same outbox, claims, leases and settlements, each to its own destination.

Any number of dispatchers run against one database (one in every ``noclash serve``
process by default, or alone in ``noclash worker``); they share nothing but the database.
What each one does, in a loop:

1. **Claim** a batch of due deliveries (:func:`noclash.chat.outbox.claim_due`: one
   statement, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so dispatchers take disjoint
   rows). It claims ahead of the sends in flight, so a send that finishes is replaced at
   once without a claim statement per delivery: at least its concurrency, and more when
   the senders would use that up while the next claim is on its way
   (:meth:`Dispatcher._pace`).
2. **Send** each one through its destination's adapter (:mod:`noclash.channels`), up to
   ``NOCLASH_DISPATCHER_CONCURRENCY`` at a time, over pooled HTTP clients: the
   platforms', and apart from them the webhooks', whose every connection is checked to
   lead outside noclash's network (:func:`noclash.channels.webhooks.client`); both sliced
   into clients of a few connections each (:class:`SendClients`).
3. **Settle** the outcome (:func:`noclash.chat.outbox.settle`), batched: outcomes that
   arrive while a batch is written go in the next one, one statement each batch.
   Retries back off exponentially with jitter (and at least as long as the platform
   asked); a permanent error or the last attempt is ``failed``; a send the platform may
   have delivered waits for Meta's echo, or becomes ``unknown`` on Telegram
   (:mod:`noclash.channels.sending`). An event is retried whatever went wrong, up to
   ``NOCLASH_WEBHOOK_MAX_ATTEMPTS``: the bot drops a repeat by its event id.
4. **Wake** due snoozes, once a second (:func:`noclash.chat.lifecycle.wake_due_snoozes`).
5. **Prune** events older than ``NOCLASH_EVENT_RETENTION_DAYS``, when set, once a minute
   (:func:`noclash.chat.events.prune`: batches, oldest first, never an event still on its
   way to a webhook).

Where the database work runs: on PostgreSQL on the event loop itself, through psycopg's
asyncio interface and an engine of the dispatcher's own (a few connections); on SQLite in
worker threads, since a transaction there can wait seconds for the file's write lock
(:meth:`Dispatcher._db`).

Events it records (a snooze woken, a delivery failed) wake live readers once committed,
through the process's :class:`~noclash.chat.wakeups.Hub` (``hub``): the app's own in
``noclash serve``, one of its own in ``noclash worker``, which on PostgreSQL sends the
coalesced NOTIFY that wakes streams in the serving processes. The hub wakes the
dispatcher in turn (:meth:`~noclash.chat.wakeups.Hub.when_queued`) after every commit
that queued a delivery: in this process at once, in others on PostgreSQL through that
NOTIFY. The poll (``NOCLASH_DISPATCHER_POLL_SECONDS``) is the fallback, not the path.

Crashes: a dispatcher killed at any instant leaves its claims ``sending`` until their
lease ends; then any dispatcher takes them over. A send whose platform answer had arrived
but was not yet settled is sent again then: that, and a read timeout, are the only ways a
message can reach a platform twice (docs/outbound.md). The database being away stops
nothing but progress: each step logs, waits and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import anyio
import httpx
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from noclash.channels import webhooks
from noclash.channels.senders import senders as configured_senders
from noclash.channels.sending import Outcome, Outgoing, Sender, SendResult
from noclash.channels.webhooks import EventPost, WebhookSender
from noclash.chat import events, outbox
from noclash.chat.lifecycle import wake_due_snoozes
from noclash.chat.outbox import Claimed, Settlement
from noclash.chat.wakeups import Hub
from noclash.config import Settings
from noclash.db.dialects import dialect_for
from noclash.db.tables import DeliveryStatus
from noclash.db.types import utcnow

log = logging.getLogger("noclash.dispatch")
T = TypeVar("T")

# How often due snoozes are woken (the promise: within 5 s of snoozed_until).
SNOOZE_INTERVAL_SECONDS = 1.0
# How often events past their retention are pruned, and at most how many batches each
# time (the rest waits for the next time: a backlog of old events never holds up sends).
PRUNE_INTERVAL_SECONDS = 60.0
PRUNE_BATCHES = 10
DATABASE_ERRORS = (DBAPIError, PoolTimeout)
# A stopping dispatcher tries this many times to write its last outcomes, then leaves them
# to the leases.
STOP_SETTLE_ATTEMPTS = 5
# A dispatcher whose transactions run on the event loop without waiting (SQLite, see _db)
# copies the write-ahead log into the main file after this many of them, in a thread.
CHECKPOINT_EVERY = 200
# The settlement waits this long for more outcomes to join a batch (an UPDATE of one row
# costs nearly what one of thirty costs), unless half the concurrency is already waiting.
SETTLE_GATHER_SECONDS = 0.005
# A send must end this long before its claim's lease does, at most (a tenth of the lease
# when that is less): time to write its outcome before another dispatcher may take over.
SETTLE_SLACK_SECONDS = 2.0
# Connections per pooled HTTP client (see SendClients).
CONNECTIONS_PER_CLIENT = 4
# Transactions a dispatcher runs at once: the claim (or the snooze wake-up) and the
# settlement, and the give-back when it stops. Its asyncio engine's pool holds that many.
DATABASE_WORK = 4
# Deliveries claimed ahead of the sends in flight, at most this many times the concurrency
# (see Dispatcher._pace).
MAX_AHEAD = 3


class SendClients:
    """The HTTP clients of one dispatcher: one slot per send in flight.

    ``concurrency`` keep-alive connections in all, as one client limited to
    ``concurrency`` connections would hold, but in clients of
    :data:`CONNECTIONS_PER_CLIENT` connections each. httpcore's pool (1.0) scans every
    connection for every connection on each request and each response (quadratic in the
    pool's size): at 64 connections in one pool a send cost ten times the CPU it costs
    in pools of four, which capped a dispatcher at a tenth of what the platform allowed.
    Each of the dispatcher's senders takes a slot (:meth:`acquire`) for as long as it
    runs and sends over that slot's client, so no client ever has more requests than
    connections. Timeouts and the total number of connections are unchanged.
    """

    def __init__(
        self,
        settings: Settings,
        concurrency: int,
        make: Callable[[int], httpx.AsyncClient] | None = None,
    ) -> None:
        """``make(n)``: a client of ``n`` connections (default: the platforms' client;
        the dispatcher passes :func:`noclash.channels.webhooks.client` for webhooks)."""
        self.concurrency = concurrency
        per_client = min(CONNECTIONS_PER_CLIENT, concurrency)
        if make is None:
            timeout = httpx.Timeout(settings.platform_timeout_seconds)
            ssl_context = httpx.create_ssl_context()  # one for all (loading takes tens of ms)

            def make(connections: int) -> httpx.AsyncClient:
                limits = httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                )
                return httpx.AsyncClient(timeout=timeout, verify=ssl_context, limits=limits)

        self.clients = [
            make(min(per_client, concurrency - first))
            for first in range(0, concurrency, per_client)
        ]
        self._per_client = per_client
        self._free = list(reversed(range(concurrency)))

    @classmethod
    def for_webhooks(cls, settings: Settings, concurrency: int) -> SendClients:
        """Clients for bots' webhooks, sliced the same way: every connection they open is
        checked to lead outside noclash's network (:func:`noclash.channels.webhooks.client`,
        unless ``allow_private_webhooks``), and they share one certificate context."""
        verify = webhooks.ssl_verify_context()  # one for all (loading it takes milliseconds)
        return cls(
            settings,
            concurrency,
            make=lambda connections: webhooks.client(
                timeout=settings.platform_timeout_seconds,
                max_connections=connections,
                allow_private=settings.allow_private_webhooks,
                ssl_context=verify,
            ),
        )

    def acquire(self) -> tuple[int, httpx.AsyncClient]:
        """A free slot and its client (raises IndexError when all ``concurrency`` are taken)."""
        slot = self._free.pop()
        return slot, self.clients[slot // self._per_client]

    def release(self, slot: int) -> None:
        self._free.append(slot)

    async def __aenter__(self) -> SendClients:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for client in self.clients:
            await client.aclose()


class Dispatcher:
    """Sends due deliveries from ``engine`` until :meth:`stop` is called."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        senders: dict[str, Sender] | None = None,
        webhook_sender: WebhookSender | None = None,
        name: str = "dispatcher",
        hub: Hub | None = None,
    ) -> None:
        self.engine = engine
        self.hub = hub
        self.settings = settings
        self.senders = senders if senders is not None else configured_senders(settings)
        self.webhook_sender = webhook_sender or WebhookSender(settings.platform_timeout_seconds)
        self.name = name
        self.concurrency = settings.dispatcher_concurrency
        self._ready: deque[Claimed] = deque()
        self._busy = 0  # senders in the middle of a delivery
        self._finished = 0  # deliveries the senders have finished (sent or not)
        self._ahead = float(self.concurrency)  # how many to keep claimed ahead (_pace)
        self._settlements: list[Settlement] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._settle_wakeup: asyncio.Event | None = None
        self._has_ready: asyncio.Event | None = None
        self._stopping = False
        self._dispatching = False  # the claim loop runs: senders may take deliveries
        self._idle = False
        self._wakes = 0  # wake-ups so far (see _poke and _dispatch_loop)
        self._limiter = anyio.CapacityLimiter(DATABASE_WORK)
        # Where the database has an asyncio driver, the dispatcher's transactions run on
        # the event loop through an engine of its own (see _db); disposed when run ends.
        dialect = dialect_for(engine)
        # No ping before each transaction: it is one more round trip, and every
        # transaction here is tried again when it fails (a connection found dead is
        # dropped from the pool by that failure).
        self.async_engine = (
            dialect.async_engine(engine, pool_size=DATABASE_WORK, max_overflow=0, pre_ping=False)
            if dialect.supports_async_driver
            else None
        )
        # The same engine's connections in autocommit, for work whose every statement
        # stands alone (see _db).
        self._autocommit_engine = (
            self.async_engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.async_engine is not None
            else None
        )
        # Elsewhere, where the database offers transactions that never wait (SQLite: a
        # connection that fails at once when another one writes), they run on the loop
        # too, and in a worker thread only when the database is busy (see _db).
        self._dialect = dialect
        self.quick_engine = None if self.async_engine else dialect.nonblocking_engine(engine)
        self._quick_commits = 0
        self._checkpointing: asyncio.Task[None] | None = None
        # Counters, for logs, tests and the benchmark.
        self.sent = 0
        self.settled = 0
        self.outlived = 0  # claimed deliveries left unsent: their lease was running out
        self.pruned = 0  # events deleted past their retention
        # When (time.monotonic()) each recent claim's lease ends, at the latest.
        self._lease_end: dict[UUID, float] = {}

    # -- control (any thread) --------------------------------------------------------------
    def wake(self) -> None:
        """Work may be due (a delivery was just queued): look now, not at the next poll.
        Thread-safe; the hub calls it after such a commit."""
        loop, event = self._loop, self._wakeup
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        self._wakes += 1
        self._idle = False
        if self._wakeup is not None:
            self._wakeup.set()

    def stop(self) -> None:
        """Finish what is in flight, give back what was claimed and not sent, then return
        from :meth:`run`."""
        self._stopping = True
        self.wake()

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._settle_wakeup = asyncio.Event()
        self._has_ready = asyncio.Event()
        # Webhooks go over clients of their own (see SendClients.for_webhooks).
        hooks = SendClients.for_webhooks(self.settings, self.concurrency)
        # Events queued for a webhook by this process wake it at once (not at its poll).
        queued = self.hub.when_queued(self.wake) if self.hub else contextlib.nullcontext()
        async with SendClients(self.settings, self.concurrency) as clients, hooks:
            settler = asyncio.create_task(self._settle_loop())
            self._dispatching = True
            senders = [
                asyncio.create_task(self._send_loop(clients, hooks))
                for _ in range(self.concurrency)
            ]
            try:
                with queued:
                    await self._dispatch_loop()
            finally:
                # Idle senders leave; a sender in the middle of a delivery finishes it.
                self._dispatching = False
                self._has_ready.set()
                await asyncio.wait(senders)
                await self._release_unsent()
                self._stopping = True
                self._settle_wakeup.set()
                await settler
                if self.async_engine is not None:
                    await self.async_engine.dispose()
                if self._checkpointing is not None:
                    await asyncio.wait([self._checkpointing])
                if self.quick_engine is not None:
                    self.quick_engine.dispose()
        log.info("%s stopped: %d sent", self.name, self.sent)

    async def _dispatch_loop(self) -> None:
        assert self._wakeup is not None and self._has_ready is not None
        poll = self.settings.dispatcher_poll_seconds
        next_snooze = next_prune = 0.0
        while not self._stopping:
            if time.monotonic() >= next_snooze:
                await self._wake_snoozes()
                next_snooze = time.monotonic() + SNOOZE_INTERVAL_SECONDS
            if self.settings.event_retention_days and time.monotonic() >= next_prune:
                await self._prune_events()
                next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
            want = self._claim_wanted()
            if want:
                finished, started, wakes = self._finished, time.monotonic(), self._wakes
                claimed = await self._claim(want)
                self._pace(self._finished - finished)
                if claimed:
                    self._note_lease(claimed[0].claim_token, started)
                    self._ready.extend(claimed)
                    self._has_ready.set()
                    continue
                if self._wakes != wakes:
                    # Woken during the claim: what was queued may have committed after the
                    # claim's snapshot was taken, so look again rather than go idle.
                    continue
                self._idle = True  # nothing due: wait for a wake-up or the next poll
            self._wakeup.clear()
            wait = min(poll, max(0.0, next_snooze - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            if not self._wakeup.is_set():
                self._idle = False  # the poll interval passed: look again

    def _claim_wanted(self) -> int:
        """How many to claim now: what is missing from the sends in flight plus the
        deliveries to keep claimed ahead (:meth:`_pace`), once that is at least half the
        concurrency (fewer, larger claims); none when nothing is due."""
        want = self.concurrency + round(self._ahead) - len(self._ready) - self._busy
        return want if not self._idle and want >= max(1, self.concurrency // 2) else 0

    def _note_lease(self, token: UUID, claimed_at: float) -> None:
        """Remember when the lease of the claim ``token`` (taken at or after
        ``claimed_at``) ends, at the latest (see :meth:`_send_bound`)."""
        lease = self.settings.delivery_lease_seconds
        self._lease_end = {t: end for t, end in self._lease_end.items() if end > claimed_at}
        self._lease_end[token] = claimed_at + lease

    def _send_bound(self, token: UUID) -> float | None:
        """How long a send that starts now under the claim ``token`` may take in all, or
        None when it must not start.

        Why: past its lease another dispatcher may take the delivery over and send it, so
        a send must end, and its outcome be written, before the lease does. httpx's
        timeout bounds each phase of a request (connect, write, every read), not the
        whole of it, so the dispatcher bounds the whole send itself: the platform's
        timeout, or less when the lease has less left. A send may start while that
        leaves it its full timeout (for a lease shorter than two timeouts, half the
        lease); claims ahead of the sends can wait longer than that when the sends slow
        down after a fast claim.
        """
        end = self._lease_end.get(token)  # (a claim no longer remembered is older than a lease)
        if end is None:
            return None
        timeout = self.settings.platform_timeout_seconds
        lease = self.settings.delivery_lease_seconds
        left = end - time.monotonic() - min(SETTLE_SLACK_SECONDS, lease / 10)
        return min(timeout, left) if left >= min(timeout, lease / 2) else None

    def _outlived(self, claim: Claimed) -> None:
        """A claimed delivery whose lease would run out during its send is not sent: it
        stays ``sending`` under this claim until the lease ends, then any dispatcher
        takes it over (this one included)."""
        self.outlived += 1
        log.warning(
            "%s: delivery %s waited too long for a sender; left to be claimed again when "
            "its lease ends",
            self.name, claim.id,
        )  # fmt: skip

    def _pace(self, finished: int) -> None:
        """Learn from a claim during which the senders finished ``finished`` deliveries
        how many to keep claimed ahead: four times what they finish in the time of a
        claim (its time varies, and a slow one can take twice the last one's while the
        senders finish more than that), at least the concurrency and at most
        :data:`MAX_AHEAD` times it, averaged with what it was.

        Why it moves: a claim is a round trip to the database, and on a busy event loop
        each round trip waits for turns of the loop, tens of milliseconds each when it
        runs dozens of sends. A fixed margin that covers an idle loop's claim runs dry on
        a busy one, and senders then wait with nothing to send. A margin fixed for the
        busy case would hold that many claims on a quiet dispatcher, where a crash leaves
        them to their leases.
        """
        target = min(MAX_AHEAD * self.concurrency, max(self.concurrency, 4 * finished))
        self._ahead = (self._ahead + target) / 2

    async def _send_loop(self, clients: SendClients, hooks: SendClients) -> None:
        """One of ``concurrency`` senders: it takes the oldest claimed delivery, sends it
        over its own slot's connection, and takes the next, until the dispatcher stops.

        Long-lived senders rather than a task per delivery: a send that ends is followed
        at once by the next on the same connection, with no task to create and no
        callback to run, and the connection is never left idle between them (httpcore
        checks every idle connection of its pool, a system call each, on every request).
        """
        assert self._has_ready is not None and self._wakeup is not None
        slot, client = clients.acquire()
        hook_slot, hook = hooks.acquire()
        try:
            while self._dispatching and not self._stopping:
                if not self._ready:
                    self._has_ready.clear()
                    await self._has_ready.wait()
                    continue
                claim = self._ready.popleft()
                bound = self._send_bound(claim.claim_token)
                if bound is None:
                    self._outlived(claim)
                    if self._claim_wanted():
                        self._wakeup.set()
                    continue
                self._busy += 1
                try:
                    await self._deliver(hook if claim.to_webhook else client, claim, bound)
                finally:
                    self._busy -= 1
                    self._finished += 1
                if self._claim_wanted():
                    self._wakeup.set()  # the claim loop has a batch to claim
        finally:
            clients.release(slot)
            hooks.release(hook_slot)

    # -- the database ----------------------------------------------------------------------
    async def _db(self, work: Callable[..., T], *args: Any, autocommit: bool = False) -> T:
        """``work(conn, *args)`` in one transaction, without blocking the event loop.

        ``autocommit``: each of the work's statements stands alone (a claim, a settlement
        that announces no failure), so where that saves round trips (the asyncio engine)
        each commits by itself: one round trip per statement, where a transaction adds
        its ``BEGIN`` and ``COMMIT``, and each round trip waits for turns of a busy loop.

        Through the driver's asyncio interface where the database has one (PostgreSQL:
        psycopg's, SQLAlchemy's async engine): the statements' Python runs on the event
        loop between the sends, and waiting for the server is an await. Elsewhere (SQLite,
        whose write lock can keep a transaction waiting) in a worker thread. The thread
        costs more than the hand-off: each row the driver steps releases and retakes the
        GIL, which passes the interpreter back and forth with the event loop, and on a
        process that sends all the time that doubled the CPU of the database work
        (docs/performance.md, Outbound).
        """
        if autocommit and self._autocommit_engine is not None:
            async with self._autocommit_engine.connect() as conn:
                return await conn.run_sync(work, *args)
        if self.async_engine is not None:
            async with self.async_engine.begin() as conn:
                return await conn.run_sync(work, *args)
        if self.quick_engine is not None:
            try:
                result = self._in_transaction(work, *args, engine=self.quick_engine)
            except DBAPIError as exc:
                if not self._dialect.is_busy(exc.orig):
                    raise
                # Another connection writes: wait for it in a thread (the transaction that
                # failed rolled back whole, so the work runs again from the start).
            else:
                self._quick_committed()
                return result
        return await anyio.to_thread.run_sync(
            self._in_transaction, work, *args, limiter=self._limiter
        )

    def _in_transaction(
        self, work: Callable[..., T], *args: Any, engine: Engine | None = None
    ) -> T:
        with (engine or self.engine).begin() as conn:
            return work(conn, *args)

    def _quick_committed(self) -> None:
        """Count a commit that skipped the checkpoint; now and then, checkpoint in a
        thread (never on the loop: it writes the main file and waits for the disk)."""
        self._quick_commits += 1
        if self._quick_commits % CHECKPOINT_EVERY or (
            self._checkpointing is not None and not self._checkpointing.done()
        ):
            return
        self._checkpointing = asyncio.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._dialect.checkpoint, self.engine)
        except DATABASE_ERRORS as exc:
            log.warning("%s could not checkpoint: %s", self.name, _short(exc))

    async def _claim(self, limit: int) -> list[Claimed]:
        try:
            return await self._db(self._claim_in, limit, autocommit=True)
        except DATABASE_ERRORS as exc:
            log.warning("%s could not claim deliveries: %s", self.name, _short(exc))
            await asyncio.sleep(self.settings.dispatcher_poll_seconds)
            return []

    def _claim_in(self, conn: Connection, limit: int) -> list[Claimed]:
        return outbox.claim_due(
            conn, limit=limit, lease_seconds=self.settings.delivery_lease_seconds
        )

    async def _wake_snoozes(self) -> None:
        try:
            woken, recorded = await self._db(_wake_in)
        except DATABASE_ERRORS as exc:
            log.warning("%s could not wake snoozes: %s", self.name, _short(exc))
            return
        self._committed(recorded)
        if woken:
            log.info("%s woke %d snoozed conversations", self.name, len(woken))

    async def _prune_events(self) -> None:
        """Delete events past their retention, a batch per transaction, at most
        :data:`PRUNE_BATCHES` batches now."""
        before = events.retention_horizon(self.settings.event_retention_days)
        assert before is not None
        pruned = 0
        for _ in range(PRUNE_BATCHES):
            try:
                done = await self._db(_prune_in, before)
            except DATABASE_ERRORS as exc:
                log.warning("%s could not prune events: %s", self.name, _short(exc))
                break
            pruned += done
            if done < events.PRUNE_BATCH or self._stopping:
                break
        if pruned:
            log.info("%s pruned %d events made before %s", self.name, pruned, before)
        self.pruned += pruned

    def _committed(self, recorded: set[Any]) -> None:
        """After a commit that recorded events: wake their readers."""
        if recorded and self.hub is not None:
            self.hub.committed(recorded)

    async def _settle_loop(self) -> None:
        assert self._settle_wakeup is not None
        failures = 0
        while True:
            await self._settle_wakeup.wait()
            if not self._stopping and len(self._settlements) < self.concurrency // 2:
                await asyncio.sleep(SETTLE_GATHER_SECONDS)  # let more outcomes join
            self._settle_wakeup.clear()
            while self._settlements:
                batch, self._settlements = self._settlements, []
                try:
                    settled, recorded = await self._db(
                        _settle_in, batch, autocommit=not outbox.announces(batch)
                    )
                    self.settled += settled
                    self._committed(recorded)
                    if outbox.frees_followers(batch):
                        # A delivery of the same conversation, held back by the order of
                        # sends (outbox.claim_due), may be claimable now: look at once,
                        # not at the next poll.
                        self._poke()
                    failures = 0
                except DATABASE_ERRORS as exc:
                    # Keep them: written when the database is back (their claims hold
                    # until the lease ends; after that the delivery is sent again).
                    log.warning("%s could not settle deliveries: %s", self.name, _short(exc))
                    self._settlements[:0] = batch
                    failures += 1
                    if self._stopping and failures >= STOP_SETTLE_ATTEMPTS:
                        log.error(
                            "%s stopped with %d outcomes unwritten: their leases will expire "
                            "and they will be sent again",
                            self.name, len(self._settlements),
                        )  # fmt: skip
                        return
                    await asyncio.sleep(self.settings.dispatcher_poll_seconds)
            if self._stopping and not self._busy:
                return

    async def _release_unsent(self) -> None:
        unsent, self._ready = list(self._ready), deque()
        if not unsent:
            return
        try:
            await self._db(outbox.release, unsent)
        except DATABASE_ERRORS as exc:
            log.warning("%s could not give back %d claims: %s", self.name, len(unsent), exc)

    # -- one delivery ------------------------------------------------------------------------
    async def _deliver(self, client: httpx.AsyncClient, claim: Claimed, bound: float) -> None:
        """Send ``claim`` within ``bound`` seconds in all, and queue its outcome.

        A send that has not ended by then, or that raised, may have reached the platform
        (the request may have gone out): it is settled as a send without an answer, never
        as one that can simply be sent again (an event for a webhook is, as every failed
        one: the bot drops a repeat by its id).
        """
        deadline = asyncio.timeout(bound)
        try:
            async with deadline:
                settlement = await self._attempt(client, claim)
        except TimeoutError:
            if not deadline.expired():
                raise
            settlement = self._unanswered(claim, f"no answer within {bound:g} s in all")
        except Exception as exc:  # a bug must not stop the loop or lose the delivery
            log.exception("%s: delivery %s raised", self.name, claim.id)
            settlement = self._unanswered(claim, f"the send raised {exc!r}")
        if settlement.status == DeliveryStatus.SENT:
            self.sent += 1
        self._settlements.append(settlement)
        assert self._settle_wakeup is not None
        self._settle_wakeup.set()

    def _unanswered(self, claim: Claimed, error: str) -> Settlement:
        """The outcome of a send that may or may not have reached the other side."""
        if claim.to_webhook:
            return self.decide(claim, self.webhook_sender, SendResult(Outcome.RETRY, error=error))
        return self.decide(
            claim, self.senders.get(claim.destination), SendResult(Outcome.AMBIGUOUS, error=error)
        )

    async def _attempt(self, client: httpx.AsyncClient, claim: Claimed) -> Settlement:
        if claim.to_webhook:
            return await self._attempt_webhook(client, claim)
        if claim.connection_gone:
            return self._final(claim, DeliveryStatus.FAILED, outbox.CONNECTION_GONE)
        if not claim.access_token:
            return self._final(claim, DeliveryStatus.FAILED, outbox.NO_ACCESS_TOKEN)
        sender = self.senders.get(claim.destination)
        if sender is None:
            return self._final(
                claim, DeliveryStatus.FAILED, f"noclash cannot send to {claim.destination}"
            )
        assert claim.recipient is not None and claim.text is not None
        outgoing = Outgoing(claim.access_token, claim.recipient, claim.text, str(claim.id))
        result = await sender.send(client, outgoing)
        return self.decide(claim, sender, result)

    async def _attempt_webhook(self, client: httpx.AsyncClient, claim: Claimed) -> Settlement:
        """An event to its chatbot's webhook, at the URL and with the secret the chatbot has
        now (read with the claim): a URL removed meanwhile fails the delivery."""
        if not claim.webhook_url or claim.event is None:
            return self._final(claim, DeliveryStatus.FAILED, outbox.WEBHOOK_REMOVED)
        post = EventPost(claim.webhook_url, claim.webhook_secret, claim.event)
        result = await self.webhook_sender.send(client, post)
        return self.decide(claim, self.webhook_sender, result)

    def decide(
        self, claim: Claimed, sender: Sender | WebhookSender | None, result: SendResult
    ) -> Settlement:
        """What a send's result makes of the delivery (the retry policy, in one place)."""
        now = utcnow()
        settings = self.settings
        attempts = (
            settings.webhook_max_attempts if claim.to_webhook else settings.delivery_max_attempts
        )
        last = claim.attempts >= attempts
        if result.outcome == Outcome.SENT:
            return Settlement(
                claim.id, claim.claim_token, DeliveryStatus.SENT, now,
                platform_message_id=result.platform_message_id, sent_at=now,
            )  # fmt: skip
        if result.outcome == Outcome.FAILED:
            return self._final(claim, DeliveryStatus.FAILED, result.error)
        if result.outcome == Outcome.AMBIGUOUS:
            if sender is not None and sender.confirms_by_echo and not last:
                wait = settings.meta_echo_wait_seconds
                return Settlement(
                    claim.id, claim.claim_token, DeliveryStatus.SENDING,
                    now + timedelta(seconds=wait),
                    last_error=f"{result.error}; waiting {wait:g} s for the platform's echo "
                    "before sending again",
                )  # fmt: skip
            return self._final(
                claim, DeliveryStatus.UNKNOWN,
                f"{result.error}: the platform may have delivered it; "
                "retry to send it again",
            )  # fmt: skip
        if last:
            return self._final(
                claim,
                DeliveryStatus.FAILED,
                f"gave up after {claim.attempts} attempts: {result.error}",
            )
        delay = max(self.backoff(claim.attempts), result.retry_after or 0.0)
        return Settlement(
            claim.id, claim.claim_token, DeliveryStatus.QUEUED,
            now + timedelta(seconds=delay), last_error=result.error,
        )  # fmt: skip

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: exponential, capped, with jitter (half
        fixed, half random, so retries of many deliveries spread out)."""
        base = self.settings.delivery_backoff_seconds
        delay = min(self.settings.delivery_backoff_max_seconds, base * 2 ** (attempts - 1))
        return delay / 2 + random.uniform(0, delay / 2)

    @staticmethod
    def _final(claim: Claimed, status: DeliveryStatus, error: str | None) -> Settlement:
        return Settlement(claim.id, claim.claim_token, status, utcnow(), last_error=error)


def _wake_in(conn: Connection) -> tuple[list[Any], set[Any]]:
    """Wake due snoozes; what was woken and the chatbots whose events were recorded."""
    with events.collecting() as recorded:
        return wake_due_snoozes(conn), recorded


def _prune_in(conn: Connection, before: datetime) -> int:
    return events.prune(conn, before=before)


def _settle_in(conn: Connection, batch: list[Settlement]) -> tuple[int, set[Any]]:
    """Write outcomes; how many held and the chatbots whose events were recorded."""
    with events.collecting() as recorded:
        return outbox.settle(conn, batch), recorded


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


__all__ = ["Dispatcher", "SendClients"]
