"""Events reach the bot across ``kill -9`` of the process sending them, on both engines.

120 events are queued (20 customers of a custom channel, a conversation and 5 messages
each, stored through the domain functions as the API stores them); ``noclash serve``
(its dispatcher on) sends them to a slow loopback bot and is killed with SIGKILL three
times while it sends, then restarted. Afterwards every event has reached the bot, signed,
first received in order per conversation, and every webhook delivery is ``sent``. An event
reaches the bot twice only inside the window docs/events.md names (its request went out,
its outcome was not written before the kill): each repeat is checked to lie across a kill,
and a bot drops it by its ``Noclash-Event-Id``.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import pytest
import sqlalchemy as sa

from noclash.channels.webhooks import verify
from noclash.chat.chatbots import create_chatbot, set_webhook_secret
from noclash.chat.connections import create_connection
from noclash.chat.inbound import receive_message
from noclash.chat.users import create_user
from noclash.db.engine import create_engine
from noclash.db.tables import WEBHOOK_DESTINATION, events
from tests.support.bots import LoopbackBot
from tests.support.outbound import delivery_statuses
from tests.support.platforms import running, wait_for
from tests.support.serve import serving

CUSTOMERS, PER_CUSTOMER, KILLS = 20, 5, 3
SECRET = "whsec_crash-test-secret-of-enough-length-000000000"


def _queue(url: str, bot_url: str) -> list[tuple[str, str]]:
    """The chatbot, its webhook and 120 events with their deliveries, queued; every
    event's (id, conversation id), in the order each conversation's were recorded."""
    engine = create_engine(url)
    try:
        user, _token = create_user(engine, f"crash-{time.monotonic_ns()}@example.com")
        with engine.begin() as conn:
            bot = create_chatbot(conn, owner_id=user.id, name="crash", webhook_url=bot_url)
            set_webhook_secret(conn, bot.id, owner_id=user.id, secret=SECRET)
            connection = create_connection(
                conn, chatbot_id=bot.id, owner_id=user.id, channel="custom", external_id="sms"
            )
        for c in range(CUSTOMERS):
            for i in range(PER_CUSTOMER):
                receive_message(
                    engine, connection_id=connection.id, psid=f"+1555{c:04d}",
                    platform_message_id=f"{c}/{i}", text=f"{c}/{i}",
                )  # fmt: skip
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(events.c.id, events.c.conversation_id).order_by(events.c.id)
            ).all()
        return [(str(r.id), str(r.conversation_id)) for r in rows]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_kill_9_while_sending_events_loses_none(database_url, tmp_path: Path):
    with running(LoopbackBot()) as bot:
        bot.latency = 0.15  # a slow bot: requests are in flight when the kill comes
        queued = _queue(database_url, bot.url)
        assert len(queued) == CUSTOMERS * (PER_CUSTOMER + 1)
        env = {
            "NOCLASH_DISPATCHER": "on",
            "NOCLASH_DISPATCHER_CONCURRENCY": "8",
            "NOCLASH_DISPATCHER_POLL_SECONDS": "0.1",
            # A killed process's claims are taken over after this long.
            "NOCLASH_DELIVERY_LEASE_SECONDS": "3",
            "NOCLASH_PLATFORM_TIMEOUT_SECONDS": "5",
        }
        kills: list[float] = []
        for _ in range(KILLS):
            with serving(database_url, tmp_path, env=env) as served:
                before = len(bot.requests)
                assert wait_for(lambda b=before: len(bot.requests) >= b + 20, timeout=30)
                served.proc.kill()  # SIGKILL: no cleanup, no rollback, no answer
                served.proc.wait()
                kills.append(time.time())
        with serving(database_url, tmp_path, env=env):
            assert wait_for(
                lambda: delivery_statuses(database_url, WEBHOOK_DESTINATION)["sent"] == len(queued),
                timeout=120,
                every=0.5,
            ), delivery_statuses(database_url, WEBHOOK_DESTINATION)
        received = bot.requests

    ids = [r.headers["noclash-event-id"] for r in received]
    assert set(ids) == {event_id for event_id, _ in queued}, "every event reached the bot"
    assert all(verify(r.body, r.headers["noclash-signature"], SECRET) for r in received)
    repeats = {event_id: n for event_id, n in Counter(ids).items() if n > 1}
    print(f"\n{len(received)} requests for {len(queued)} events, "
          f"{sum(repeats.values()) - len(repeats)} repeats across {KILLS} kills")  # fmt: skip
    times: dict[str, list[float]] = defaultdict(list)
    for request in received:
        times[request.headers["noclash-event-id"]].append(request.at)
    for event_id in repeats:
        for first, second in pairwise(times[event_id]):
            assert any(first < k < second for k in kills), (event_id, times[event_id], kills)
    # Order per conversation: each conversation's events first reached the bot in the
    # order they were recorded.
    conversation_of = dict(queued)
    first_receipts: dict[str, list[str]] = defaultdict(list)
    for event_id in dict.fromkeys(ids):
        first_receipts[conversation_of[event_id]].append(event_id)
    recorded: dict[str, list[str]] = defaultdict(list)
    for event_id, conversation_id in queued:
        recorded[conversation_id].append(event_id)
    assert first_receipts == recorded
