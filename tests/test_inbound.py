"""receive_message: the one inbound path, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from noclash.chat.errors import InvalidInput, NotFound
from noclash.chat.inbound import receive_message
from noclash.db.tables import chatbots, connections, conversations, messages
from noclash.unique import uuid7
from tests.support.factories import make_chatbot, make_connection

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def connection(engine):
    bot = make_chatbot(engine)
    return make_connection(engine, bot.id)


def _convs(engine, connection_id, psid="p1"):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(conversations)
            .where(conversations.c.connection_id == connection_id, conversations.c.psid == psid)
            .order_by(conversations.c.id)
        ).all()


def _msgs(engine, conversation_id):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(messages)
            .where(messages.c.conversation_id == conversation_id)
            .order_by(messages.c.id)
        ).all()


def _recv(engine, connection, mid, psid="p1", **kw):
    return receive_message(
        engine, connection_id=connection.id, psid=psid, platform_message_id=mid,
        text=kw.pop("text", f"text {mid}"), **kw,
    )  # fmt: skip


def test_first_message_creates_then_joins(engine, connection):
    first = _recv(engine, connection, "m1", username="Ada", sent_at=T0)
    second = _recv(engine, connection, "m2", sent_at=T0 + timedelta(seconds=5))
    assert first.created_conversation and not first.duplicate
    assert second.conversation_id == first.conversation_id
    assert not second.created_conversation and not second.duplicate
    (conv,) = _convs(engine, connection.id)
    assert conv.status == "OPEN" and conv.title == "Ada"
    assert conv.last_message_at == T0 + timedelta(seconds=5)
    assert [m.platform_message_id for m in _msgs(engine, conv.id)] == ["m1", "m2"]
    assert {m.direction for m in _msgs(engine, conv.id)} == {"in"}


def test_redelivery_stores_nothing(engine, connection):
    first = _recv(engine, connection, "m1")
    again = _recv(engine, connection, "m1", text="changed")
    assert again.duplicate and not again.created_conversation
    assert (again.conversation_id, again.message_id) == (first.conversation_id, first.message_id)
    (msg,) = _msgs(engine, first.conversation_id)
    assert msg.text == "text m1"


def test_redelivery_after_close_creates_no_conversation(engine, connection):
    first = _recv(engine, connection, "m1")
    with engine.begin() as conn:
        conn.execute(
            sa.update(conversations)
            .where(conversations.c.id == first.conversation_id)
            .values(status="CLOSED", closed_at=T0)
        )
    again = _recv(engine, connection, "m1")
    assert again.duplicate and again.conversation_id == first.conversation_id
    assert len(_convs(engine, connection.id)) == 1


def test_last_message_at_never_rewinds(engine, connection):
    _recv(engine, connection, "late", sent_at=T0 + timedelta(minutes=10))
    _recv(engine, connection, "early", sent_at=T0)
    (conv,) = _convs(engine, connection.id)
    assert conv.last_message_at == T0 + timedelta(minutes=10)


def test_new_message_reopens_snoozed(engine, connection):
    first = _recv(engine, connection, "m1")
    with engine.begin() as conn:
        conn.execute(
            sa.update(conversations)
            .where(conversations.c.id == first.conversation_id)
            .values(status="SNOOZED", snoozed_until=T0)
        )
    dup = _recv(engine, connection, "m1")
    assert dup.duplicate
    assert _convs(engine, connection.id)[0].status == "SNOOZED"
    second = _recv(engine, connection, "m2")
    assert second.conversation_id == first.conversation_id
    (conv,) = _convs(engine, connection.id)
    assert conv.status == "OPEN" and conv.snoozed_until is None


def test_same_mid_on_another_connection_is_another_message(engine, connection):
    other = make_connection(engine, connection.chatbot_id, channel="instagram")
    a = _recv(engine, connection, "m1")
    b = _recv(engine, other, "m1")
    assert not b.duplicate and a.conversation_id != b.conversation_id


def test_bad_input_stores_nothing(engine, connection):
    with pytest.raises(NotFound):
        receive_message(engine, connection_id=uuid7(), psid="p", platform_message_id="m",
                        text="x")  # fmt: skip
    with pytest.raises(InvalidInput):
        _recv(engine, connection, "")
    with pytest.raises(InvalidInput):
        _recv(engine, connection, "m", sent_at=datetime(2026, 1, 1))  # naive
    assert _convs(engine, connection.id) == []


def test_concurrent_first_messages_share_one_conversation(engine, connection):
    """Writers held at a barrier: one conversation, every distinct mid stored once."""
    n = 16
    barrier = threading.Barrier(n)

    def deliver(i: int):
        barrier.wait()
        return _recv(engine, connection, f"m{i % 8}")

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(deliver, range(n)))
    assert len({r.conversation_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 8
    (conv,) = _convs(engine, connection.id)
    assert len(_msgs(engine, conv.id)) == 8


def _missed(chatbot_id):
    """A delivery step's answer for "no active conversation, message not stored"."""
    from noclash.chat.sql.base import Seen

    return Seen(chatbot_id, None, None, None, None)


def _patch_step(monkeypatch, engine, step, wrap):
    """Wrap the engine's ``step`` (one statement on PostgreSQL, two on SQLite) with ``wrap``."""
    from noclash.chat.sql import sql_for

    sql = sql_for(engine)
    monkeypatch.setattr(sql, step, wrap(getattr(sql, step)))


def test_losing_a_redelivery_race_leaves_no_empty_conversation(engine, connection, monkeypatch):
    """The delivery's read of the stored message can miss one a concurrent delivery is
    committing (PostgreSQL reads the snapshot taken when the statement started).

    Simulated deterministically: after the message's conversation was closed, the first
    delivery step answers "no active conversation, message not stored", as it would for a
    snapshot taken just before the other transaction committed. The start of a new
    conversation then finds the message key taken, and the new, empty conversation must
    be removed again.
    """
    from noclash.chat import inbound

    first = _recv(engine, connection, "m1")
    with engine.begin() as conn:
        conn.execute(
            sa.update(conversations)
            .where(conversations.c.id == first.conversation_id)
            .values(status="CLOSED", closed_at=T0)
        )
    calls = []

    def stale(real):
        def deliver(conn, params, **kw):
            calls.append("deliver")
            seen = real(conn, params, **kw)
            assert seen.known_id == first.message_id  # the real step does see it
            return _missed(seen.chatbot_id)

        return deliver

    real_stored = inbound._stored

    def counted_stored(*args):
        calls.append("stored")
        return real_stored(*args)

    _patch_step(monkeypatch, engine, "deliver", stale)
    monkeypatch.setattr(inbound, "_stored", counted_stored)
    again = _recv(engine, connection, "m1")
    assert calls == ["deliver", "stored"]  # the stale step, then the read of the winner
    assert again.duplicate and not again.created_conversation
    assert again.conversation_id == first.conversation_id
    assert again.message_id == first.message_id
    assert [c.id for c in _convs(engine, connection.id)] == [first.conversation_id]


def test_close_between_a_lost_claim_and_the_delivery_starts_a_new_conversation(
    engine, connection, monkeypatch
):
    """An agent closes the conversation a delivery just lost its claim to.

    The delivery's first step is made to miss the active conversation (as a snapshot
    taken before that conversation was committed would), so it tries to start one and the
    partial unique index says no. It is paused right there while another transaction
    closes the winner. On PostgreSQL the close commits in that gap, and the delivery's
    next step must miss the CLOSED conversation and start a new one: the message never
    lands in a conversation closed before it was stored. On SQLite the delivery holds the
    write lock, so the close waits and lands after the message.
    """
    from noclash.chat import lifecycle

    first = _recv(engine, connection, "m1")
    lost, closed = threading.Event(), threading.Event()
    pause = 10 if engine.dialect.name == "postgresql" else 0
    misses = []

    def miss_once(real):
        def deliver(conn, params, **kw):
            if not misses:
                misses.append(True)
                seen = conn.execute(
                    sa.select(connections.c.chatbot_id).where(
                        connections.c.id == params["connection"]
                    )
                ).one()
                return _missed(seen.chatbot_id)
            return real(conn, params, **kw)

        return deliver

    def pause_after_loss(real):
        def start(*args):
            result = real(*args)
            if result is None and not lost.is_set():
                lost.set()
                closed.wait(timeout=pause)
            return result

        return start

    _patch_step(monkeypatch, engine, "deliver", miss_once)
    _patch_step(monkeypatch, engine, "start", pause_after_loss)
    with engine.connect() as conn:
        owner_id = conn.execute(
            sa.select(chatbots.c.owner_id).where(chatbots.c.id == connection.chatbot_id)
        ).scalar_one()
    with ThreadPoolExecutor(1) as pool:
        delivery = pool.submit(_recv, engine, connection, "m2")
        assert lost.wait(timeout=10)
        with engine.begin() as conn:
            lifecycle.close(conn, first.conversation_id, owner_id=owner_id)
        closed.set()
        second = delivery.result(timeout=30)

    convs = {c.id: c for c in _convs(engine, connection.id)}
    assert convs[first.conversation_id].status == "CLOSED"
    if engine.dialect.name == "postgresql":
        assert second.created_conversation
        assert second.conversation_id != first.conversation_id
        assert convs[second.conversation_id].status == "OPEN"
        assert [m.platform_message_id for m in _msgs(engine, first.conversation_id)] == ["m1"]
    else:
        assert second.conversation_id == first.conversation_id
        assert len(convs) == 1


def test_nul_in_a_customer_text_is_stored_replaced(engine, connection):
    """PostgreSQL cannot store NUL in text; a platform must never get an error for it."""
    got = _recv(engine, connection, "m-nul", text="a\x00b", username="x\x00y")
    with engine.connect() as conn:
        text = conn.execute(
            sa.select(messages.c.text).where(messages.c.id == got.message_id)
        ).scalar_one()
    assert text == "a\ufffdb"


def test_nul_in_an_id_is_invalid_input(engine, connection):
    with pytest.raises(InvalidInput):
        _recv(engine, connection, "m\x00", psid="p1")
    with pytest.raises(InvalidInput):
        _recv(engine, connection, "m1", psid="p\x001")
