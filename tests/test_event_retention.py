"""Events past their retention are deleted, and nothing acknowledged is lost to it.

On SQLite and PostgreSQL, against the real app, a real dispatcher and a loopback bot:
:func:`noclash.chat.events.prune` deletes old events oldest first but never one still on
its way to a webhook, nor one not numbered yet; dispatchers pruning at once delete each
event once; a retry racing the prune either queues the event or finds it gone, never
"queued" for an event that is gone; and a dispatcher started with
``NOCLASH_EVENT_RETENTION_DAYS`` prunes on its own.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from noclash.chat import events as chat_events
from noclash.chat.errors import NotFound
from noclash.chat.event_deliveries import retry_failed
from noclash.config import Settings
from noclash.db.tables import chatbots, deliveries, events
from noclash.db.types import utcnow
from noclash.unique import uuid7
from noclash.unique.ids import uuid7_floor
from tests.support.bots import bot_stack, pulled_events, webhook_deliveries
from tests.support.outbound import Stack, dispatching
from tests.support.platforms import wait_for
from tests.support.sse import stream

# Every event made so far is older than this (UUIDv7 ids carry their time).
LATER = timedelta(seconds=5)


def _inbound(stack: Stack, chatbot: dict, texts: list[str], tag: str) -> None:
    connection = stack.api.post(
        f"/api/chatbots/{chatbot['id']}/connections",
        json={"channel": "custom", "external_id": f"sms-{tag}"},
    ).json()
    for n, text in enumerate(texts):
        answer = stack.api.post(
            f"/api/connections/{connection['id']}/inbound",
            json={"psid": f"+1555{tag}", "message_id": f"{tag}-{n}", "text": text},
        )
        assert answer.status_code in (200, 201), answer.text


def _event_ids(stack: Stack) -> set[UUID]:
    with stack.server.engine.connect() as conn:
        return set(conn.scalars(sa.select(events.c.id)))


def _prune_all(stack: Stack, before: Any, limit: int = 1000) -> int:
    total = 0
    while True:
        with stack.server.engine.begin() as conn:
            done = chat_events.prune(conn, before=before, limit=limit)
        total += done
        if done < limit:
            return total


def test_prune_keeps_what_is_on_its_way_and_what_is_not_numbered(database_url):
    with bot_stack(database_url, delivery_backoff_seconds=60.0) as (stack, bot):
        quiet = stack.chatbot()  # no webhook: its events have no delivery
        _inbound(stack, quiet, ["one", "two"], "q")
        hooked = stack.chatbot(webhook_url=bot.url)
        _inbound(stack, hooked, ["sent"], "s")
        assert wait_for(lambda: {d.status for d in webhook_deliveries(stack)} == {"sent"}, 20)
        bot.answer = (503, {})  # from now on the bot refuses: the next events stay queued
        _inbound(stack, hooked, ["waiting"], "w")
        # The new conversation's first event is refused (and waits 30 to 60 s to be sent
        # again); its message event waits behind it.
        assert wait_for(
            lambda: len(bot.requests) == 3
            and [d.status for d in webhook_deliveries(stack)][2:] == ["queued", "queued"],
            20,
        ), webhook_deliveries(stack)
        pending = {d.event_id for d in webhook_deliveries(stack) if d.status == "queued"}
        assert len(pending) == 2
        # Numbered (the pull API numbers what has committed), then one more not numbered.
        pulled = pulled_events(stack, quiet["id"]) + pulled_events(stack, hooked["id"])
        with stack.server.engine.begin() as conn:
            chat_events.record(
                conn, chat_events.EventType.CONVERSATION_CREATED, "not-numbered",
                chatbot_id=UUID(quiet["id"]), conversation_id=None, data={},
            )  # fmt: skip
        everything = _event_ids(stack)
        unnumbered = everything - {UUID(e["id"]) for e in pulled}
        assert len(unnumbered) == 1
        pruned = _prune_all(stack, utcnow() + LATER, limit=2)
        assert _event_ids(stack) == pending | unnumbered
        assert pruned == len(everything) - len(pending) - 1
        # The sent deliveries went with their events; the queued ones stay.
        assert {d.event_id for d in webhook_deliveries(stack)} == pending
        # The pull API starts at the oldest event kept; a pruned id is no place to start.
        assert {e["id"] for e in pulled_events(stack, hooked["id"])} == {str(i) for i in pending}
        gone = next(e["id"] for e in pulled if UUID(e["id"]) not in pending)
        stale = stack.api.get("/api/events", params={"after": gone})
        assert stale.status_code == 404
        assert stack.api.get(f"/api/events/{gone}").status_code == 404
        # Nothing is newer than a cut in the past: a prune before now - 1 h deletes none.
        assert _prune_all(stack, utcnow() - timedelta(hours=1)) == 0


def test_dispatchers_pruning_at_once_delete_each_event_once(database_url):
    with bot_stack(database_url, dispatcher=False) as (stack, _bot):
        chatbot = stack.chatbot()
        _inbound(stack, chatbot, [f"message {n}" for n in range(60)], "c")
        assert len(pulled_events(stack, chatbot["id"])) == 61  # numbers them
        before = utcnow() + LATER
        barrier = threading.Barrier(8)
        counts: list[int] = []
        errors: list[BaseException] = []

        def prune() -> None:
            try:
                barrier.wait()
                counts.append(_prune_all(stack, before, limit=7))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=prune) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sum(counts) == 61 and _event_ids(stack) == set()


def test_a_retry_racing_the_prune_never_queues_an_event_that_is_gone(database_url):
    """Each round: a new conversation's two events, past their retention, their webhook
    deliveries failed; a prune and a ``retry-failed`` at once. For each event, either
    the retry came first (the event is kept, its delivery queued and counted) or the prune
    did (the event is gone with its delivery, and the retry did not count it)."""
    with bot_stack(
        database_url, dispatcher=False, webhook_max_attempts=1, delivery_backoff_seconds=60.0
    ) as (stack, bot):
        for round_ in range(20):
            chatbot = stack.chatbot(webhook_url=bot.url)
            _inbound(stack, chatbot, ["hello"], f"r{round_}")
            pulled_events(stack, chatbot["id"])  # numbered
            with stack.server.engine.begin() as conn:
                conn.execute(sa.update(deliveries).values(status="failed"))
            result = _prune_and_retry(stack, chatbot["id"], _owner(stack, chatbot["id"]))
            rows = webhook_deliveries(stack)
            queued = [d for d in rows if d.status == "queued"]
            kept = _event_ids(stack)
            seen = (round_, result, [(d.event_id, d.status) for d in rows], kept)
            # Every queued delivery's event is there; what the retry counted is there.
            assert {d.event_id for d in queued} <= kept, seen
            assert result.get("requeued") == len(queued), seen
            # Nothing else is left: what was not queued again was pruned.
            assert kept == {d.event_id for d in rows} == {d.event_id for d in queued}, seen
            with stack.server.engine.begin() as conn:  # the next round starts clean
                conn.execute(sa.delete(events))


def _prune_and_retry(stack: Stack, chatbot_id: str, owner: UUID) -> dict[str, Any]:
    """A prune of everything and a ``retry-failed`` of the chatbot, started together."""
    barrier = threading.Barrier(2)
    result: dict[str, Any] = {}

    def prune() -> None:
        barrier.wait()
        try:
            result["pruned"] = _prune_all(stack, utcnow() + LATER)
        except Exception as exc:
            result["prune error"] = repr(exc)

    def retry() -> None:
        barrier.wait()
        try:
            with stack.server.engine.begin() as conn:
                result["requeued"] = retry_failed(conn, chatbot_id, owner_id=owner)
        except Exception as exc:
            result["retry error"] = repr(exc)

    threads = [threading.Thread(target=prune), threading.Thread(target=retry)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def _owner(stack: Stack, chatbot_id: str) -> UUID:
    with stack.server.engine.connect() as conn:
        return conn.execute(
            sa.select(chatbots.c.owner_id).where(chatbots.c.id == UUID(chatbot_id))
        ).scalar_one()


def test_a_dispatcher_with_a_retention_prunes_on_its_own(database_url):
    with bot_stack(database_url, dispatcher=False) as (stack, _bot):
        chatbot = stack.chatbot()
        _inbound(stack, chatbot, ["old news"], "o")
        old = {UUID(e["id"]) for e in pulled_events(stack, chatbot["id"])}
        assert len(old) == 2
        # A retention of 1.5 s: wait until these are older, then start a dispatcher.
        settings = stack.server.settings.model_copy(update={"event_retention_days": 1.5 / 86400})
        time.sleep(2.0)
        with dispatching(stack.server.engine, settings) as dispatcher:
            assert wait_for(lambda: not (old & _event_ids(stack)), 10), _event_ids(stack)
            assert dispatcher.pruned == 2
            _inbound(stack, chatbot, ["fresh"], "f")
            fresh = {UUID(e["id"]) for e in pulled_events(stack, chatbot["id"])}
            assert len(fresh) == 2 and fresh <= _event_ids(stack)  # a new conversation


def test_resuming_after_a_pruned_event_gets_every_event_kept(database_url):
    """Last-Event-ID (or the pull API's ``after``) names an event the retention rule
    deleted: the client missed everything that is still kept, so it gets all of it, in
    order. An unknown id made after the horizon still starts live (a 404 for ``after``)."""
    retention = {"event_retention_days": 1.0 / 86400}
    with bot_stack(database_url, dispatcher=False, **retention) as (stack, _bot):
        chatbot = stack.chatbot()
        _inbound(stack, chatbot, ["old"], "a")
        gone = pulled_events(stack, chatbot["id"])[-1]["id"]
        time.sleep(1.5)  # now older than the retention
        assert _prune_all(stack, utcnow() - timedelta(days=1.0 / 86400)) == 2
        _inbound(stack, chatbot, ["kept one", "kept two"], "b")
        kept = pulled_events(stack, chatbot["id"])
        assert len(kept) == 3
        # The pull API, likewise: after the deleted event comes every event kept.
        paged = stack.api.get("/api/events", params={"chatbot_id": chatbot["id"], "after": gone})
        assert paged.status_code == 200 and paged.json()["items"] == kept, paged.text
        unknown_recent = stack.api.get("/api/events", params={"after": str(uuid7())})
        assert unknown_recent.status_code == 404
        path = "/api/stream"
        params = {"chatbot_id": chatbot["id"]}
        resumed = stream(stack.server.base_url, path, token=stack.token, last_event_id=gone,
                         params=params)  # fmt: skip
        with resumed:
            assert resumed.wait_for(3)
            time.sleep(0.3)
        assert [e.data for e in resumed.events] == kept
        unknown = str(uuid7())
        live = stream(stack.server.base_url, path, token=stack.token, last_event_id=unknown,
                      params=params)  # fmt: skip
        with live:
            _inbound(stack, chatbot, ["live"], "c")  # a new customer: two events
            assert live.wait_for(2)
            time.sleep(0.3)
        assert [e.data for e in live.events] == pulled_events(stack, chatbot["id"])[3:]


def test_retry_failed_after_a_pruned_event_takes_every_failed_one(database_url):
    """``after`` naming an event made before the retention's horizon that is gone: every
    failed event kept came after it, so all are queued again. Without a horizon (no
    retention) such an id names nothing: 404."""
    with bot_stack(database_url, dispatcher=False) as (stack, bot):
        chatbot = stack.chatbot(webhook_url=bot.url)
        _inbound(stack, chatbot, ["hello"], "h")
        pulled_events(stack, chatbot["id"])  # numbered
        with stack.server.engine.begin() as conn:
            conn.execute(sa.update(deliveries).values(status="failed"))
        owner = _owner(stack, chatbot["id"])
        gone = uuid7_floor(utcnow() - timedelta(hours=2))
        with pytest.raises(NotFound), stack.server.engine.begin() as conn:
            retry_failed(conn, chatbot["id"], owner_id=owner, after=gone)
        with stack.server.engine.begin() as conn:
            count = retry_failed(
                conn, chatbot["id"], owner_id=owner, after=gone,
                horizon=utcnow() - timedelta(hours=1),
            )  # fmt: skip
        assert count == 2
        assert {d.status for d in webhook_deliveries(stack)} == {"queued"}


def test_a_century_is_the_longest_retention_and_before_1970_is_no_error():
    """The horizon is a time a datetime holds, and a UUIDv7 floor before 1970 is the
    first one: neither a setting nor an old id can turn into an error answered 500."""
    with pytest.raises(ValidationError):
        Settings(event_retention_days=36501)
    horizon = chat_events.retention_horizon(36500)
    assert horizon is not None and horizon.year < 1970
    assert uuid7_floor(horizon) == uuid7_floor(datetime(1970, 1, 1, tzinfo=UTC))
    assert not chat_events.may_be_pruned(uuid7(), horizon)


def test_the_pull_api_and_a_stream_under_the_longest_retention(database_url):
    with bot_stack(database_url, dispatcher=False, event_retention_days=36500) as (stack, _b):
        chatbot = stack.chatbot()
        _inbound(stack, chatbot, ["hello"], "l")
        old_id = "00000000-0000-7000-8000-000000000000"
        for after in (old_id, str(uuid7())):
            answer = stack.api.get("/api/events", params={"after": after})
            assert answer.status_code == 404, answer.text  # before 1970: nothing was pruned
        with stream(stack.server.base_url, "/api/stream", token=stack.token,
                    last_event_id=old_id) as reader:  # fmt: skip
            assert reader.status == 200
