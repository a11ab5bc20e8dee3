"""Replies survive ``kill -9`` of the process sending them, on SQLite and PostgreSQL.

200 replies are queued (20 customers, 10 each); ``noclash serve`` (its in-process
dispatcher on) sends them to a slow loopback platform and is killed with SIGKILL three
times while it sends, then restarted. Afterwards every reply has reached the platform, in
order per customer, and the ``sent`` count matches. A reply can reach the platform twice
only inside the window the docs name: its request was received before a kill and its
outcome had not been written. Each duplicate is checked to lie across a kill, and counted.

Telegram has no echo: duplicates there are possible and printed. On Meta the echo of a
send whose answer was lost settles it before the lease runs out: no duplicate at all.
"""

from __future__ import annotations

import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from noclash.chat.chatbots import create_chatbot
from noclash.chat.connections import create_connection
from noclash.chat.inbound import receive_message
from noclash.chat.messages import send_reply
from noclash.chat.users import create_user
from noclash.db.engine import create_engine
from noclash.db.tables import DeliveryStatus
from tests.support.outbound import APP_SECRET, delivery_statuses
from tests.support.platforms import LoopbackMeta, LoopbackTelegram, running, wait_for
from tests.support.serve import serving
from tests.support.server import free_port

CUSTOMERS, PER_CUSTOMER, KILLS = 20, 10, 3


def _queue(url: str, platform: str, loopback) -> None:
    """A chatbot, its connection, 20 customers and 200 replies, queued in the database."""
    _queue_many(url, loopback, customers=CUSTOMERS, per_customer=PER_CUSTOMER, platform=platform)


def _queue_many(
    url: str, loopback, *, customers: int, per_customer: int, platform: str = "telegram"
) -> None:
    """A chatbot and its connection on ``loopback``; ``customers`` customers who wrote
    once, and ``per_customer`` replies to each (texts ``"<customer>/<n>"``), queued in
    the database through the domain functions, as the API stores them."""
    engine = create_engine(url)
    try:
        user, _token = create_user(engine, f"crash-{time.monotonic_ns()}@example.com")
        with engine.begin() as conn:
            bot = create_chatbot(conn, owner_id=user.id, name="crash")
            if platform == "telegram":
                tg = loopback.add_bot(90001)
                connection = create_connection(
                    conn, chatbot_id=bot.id, owner_id=user.id, channel="telegram",
                    external_id="90001", secret="s", access_token=tg.token,
                )  # fmt: skip
            else:
                page = loopback.add_page("9000100", "crash-page-token")
                connection = create_connection(
                    conn, chatbot_id=bot.id, owner_id=user.id, channel="messenger",
                    external_id=page.page_id, access_token=page.token,
                )  # fmt: skip
        for c in range(customers):
            result = receive_message(
                engine, connection_id=connection.id, psid=str(1000 + c),
                platform_message_id=f"in-{c}", text="hello",
            )  # fmt: skip
            with engine.begin() as conn:
                for i in range(per_customer):
                    send_reply(conn, result.conversation_id, owner_id=user.id, text=f"{c}/{i}")
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["telegram", "meta"])
def test_kill_9_while_sending_loses_nothing(database_url, tmp_path: Path, platform):
    loopback = LoopbackTelegram() if platform == "telegram" else LoopbackMeta()
    with running(loopback):
        loopback.latency = 0.15  # a slow platform: sends are in flight when the kill comes
        _queue(database_url, platform, loopback)
        port = free_port()
        env = {
            "NOCLASH_DISPATCHER": "on",
            "NOCLASH_TELEGRAM_API_URL": getattr(loopback, "api_url", ""),
            "NOCLASH_META_GRAPH_URL": getattr(loopback, "graph_url", ""),
            "NOCLASH_META_APP_SECRET": APP_SECRET,
            "NOCLASH_DISPATCHER_CONCURRENCY": "8",
            "NOCLASH_DISPATCHER_POLL_SECONDS": "0.1",
            # A killed process's claims are taken over after this long; Meta's echoes of
            # its lost answers arrive well within it.
            "NOCLASH_DELIVERY_LEASE_SECONDS": "3" if platform == "telegram" else "8",
            "NOCLASH_PLATFORM_TIMEOUT_SECONDS": "5",
        }
        if platform == "meta":
            loopback.echo_to(f"http://127.0.0.1:{port}/webhooks/meta", APP_SECRET)
        kills: list[float] = []
        for _ in range(KILLS):
            with serving(database_url, tmp_path, env=env, port=port) as served:
                before = len(loopback.sent)
                assert wait_for(lambda b=before: len(loopback.sent) >= b + 15, timeout=30)
                served.proc.kill()  # SIGKILL: no cleanup, no rollback, no answer
                served.proc.wait()
                kills.append(time.time())
        with serving(database_url, tmp_path, env=env, port=port):
            assert wait_for(
                lambda: (
                    delivery_statuses(database_url)[DeliveryStatus.SENT] == CUSTOMERS * PER_CUSTOMER
                ),
                timeout=120,
                every=0.5,
            ), delivery_statuses(database_url)
        delivered = loopback.delivered()
    texts = Counter(m["text"] for m in delivered)
    expected = {f"{c}/{i}" for c in range(CUSTOMERS) for i in range(PER_CUSTOMER)}
    assert set(texts) == expected, "every reply reaches the platform"
    duplicates = {text: n for text, n in texts.items() if n > 1}
    repeats = sum(duplicates.values()) - len(duplicates)
    print(f"\n{platform}: {len(delivered)} sends for {len(expected)} replies, "
          f"{repeats} duplicates across {KILLS} kills")  # fmt: skip
    receipts: dict[str, list[float]] = {}
    for request in loopback.sent:
        text = _text(request.body)
        if text in duplicates:
            receipts.setdefault(text, []).append(request.at)
    for text, times in receipts.items():
        # Every repeat follows a kill that came after the previous receipt: the window.
        for first, second in pairwise(times):
            assert any(first < k < second for k in kills), (text, times, kills)
    if platform == "meta":
        assert duplicates == {}, "the echo settles a send whose answer was lost"
    # Order per customer: each customer's replies arrived in the order they were written.
    for c in range(CUSTOMERS):
        seen = [m["text"] for m in delivered if m["text"].startswith(f"{c}/")]
        firsts = list(dict.fromkeys(seen))
        assert firsts == [f"{c}/{i}" for i in range(PER_CUSTOMER)], firsts


def _text(body) -> str:
    if isinstance(body, dict) and "text" in body:
        return body["text"]
    return (body or {}).get("message", {}).get("text", "")
