"""``seq`` only goes up, whatever is deleted, on SQLite and PostgreSQL.

Events are numbered after commit from a counter (``event_sequence``, migration 0011),
not from ``max(events.seq)``: when the newest events go (a chatbot deleted with its
events, the retention rule pruning every one), the next events still get numbers above
every number given, so a live stream that has passed those numbers sees them.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from uuid import UUID

import httpx
import sqlalchemy as sa

from noclash.chat import events as chat_events
from noclash.chat.inbound import receive_message
from noclash.db.tables import event_sequence, events
from noclash.db.types import utcnow
from tests.support.factories import make_chatbot, make_connection
from tests.support.server import LiveServer, start_live_server
from tests.support.sse import stream


def _seqs(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(events.c.seq).order_by(events.c.seq)))


def _counter(engine: sa.Engine) -> int | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(event_sequence.c.last_seq)).scalar()


def _bot(live: LiveServer, token: str) -> tuple[httpx.Client, dict, dict]:
    client = live.client(token)
    bot = client.post("/api/chatbots", json={"name": "seq"}).json()
    connection = client.post(
        f"/api/chatbots/{bot['id']}/connections", json={"channel": "custom", "external_id": "sms"}
    ).json()
    return client, bot, connection


def _inbound(client: httpx.Client, connection: dict, message_id: str) -> None:
    body = {"psid": "ada", "message_id": message_id, "text": f"text of {message_id}"}
    answer = client.post(f"/api/connections/{connection['id']}/inbound", json=body)
    assert answer.status_code == 201, answer.text


def test_a_deleted_chatbot_does_not_hand_its_numbers_to_another_tenant(database_url):
    """A's events are 1-3, B's 4-8; A's stream starts live at 8; B deletes its chatbot
    (its events go with it). A's next events must still reach A's stream."""
    with start_live_server(database_url, stream_reread_seconds=60.0) as live:
        token_a, token_b = live.user(), live.user()
        client_a, _bot_a, connection_a = _bot(live, token_a)
        client_b, bot_b, connection_b = _bot(live, token_b)
        for n in range(2):  # a conversation and two messages
            _inbound(client_a, connection_a, f"a-{n}")
        for n in range(4):  # a conversation and four messages
            _inbound(client_b, connection_b, f"b-{n}")
        chat_events.sequence_all(live.engine)
        assert _seqs(live.engine) == [1, 2, 3, 4, 5, 6, 7, 8]
        with stream(live.base_url, "/api/stream", token=token_a) as reader:
            assert reader.status == 200
            time.sleep(0.3)  # the stream has taken its place: the latest seq, 8
            assert client_b.delete(f"/api/chatbots/{bot_b['id']}").status_code == 204
            assert _seqs(live.engine) == [1, 2, 3]
            for n in range(2, 6):
                _inbound(client_a, connection_a, f"a-{n}")
            got = reader.wait_for(4, timeout=5)
        assert [e.data["data"]["message"]["text"] for e in got] == [
            f"text of a-{n}" for n in range(2, 6)
        ]
        assert _seqs(live.engine) == [1, 2, 3, 9, 10, 11, 12]


def _numbered(engine: sa.Engine, connection_id: UUID, tag: str, count: int) -> None:
    for n in range(count):
        receive_message(
            engine, connection_id=connection_id, psid=f"p-{tag}",
            platform_message_id=f"{tag}-{n}", text="hi",
        )  # fmt: skip
    chat_events.sequence_all(engine)


def test_a_live_position_is_never_above_the_numbers_to_come(engine):
    """The chat-level view of the same case: the position a stream starts from
    (:func:`~noclash.chat.events.latest`) before and after the newest events are
    deleted, and the numbers given next."""
    keep = make_chatbot(engine)
    gone = make_chatbot(engine)
    _numbered(engine, make_connection(engine, keep.id, "custom", "sms").id, "k", 2)
    _numbered(engine, make_connection(engine, gone.id, "custom", "sms").id, "g", 4)
    with engine.connect() as conn:
        live = chat_events.latest(conn)
    assert live == 8
    with engine.begin() as conn:
        conn.execute(sa.delete(events).where(events.c.chatbot_id == gone.id))
    with engine.connect() as conn:
        assert chat_events.latest(conn) == 3 <= live  # below the counter: it only rereads
    _numbered(engine, make_connection(engine, keep.id, "custom", "sms-2").id, "n", 1)
    with engine.connect() as conn:
        new = list(conn.scalars(sa.select(events.c.seq).where(events.c.seq > live)))
    assert sorted(new) == [9, 10]
    assert _counter(engine) == 10


def test_pruning_every_event_does_not_start_the_numbers_again(engine):
    bot = make_chatbot(engine)
    connection = make_connection(engine, bot.id, "custom", "sms").id
    _numbered(engine, connection, "old", 3)
    before = _seqs(engine)
    assert before == [1, 2, 3, 4]
    with engine.begin() as conn:
        assert chat_events.prune(conn, before=utcnow() + timedelta(seconds=5)) == 4
    assert _seqs(engine) == []
    with engine.connect() as conn:
        assert chat_events.latest(conn) == 0
    _numbered(engine, connection, "new", 2)
    assert _seqs(engine) == [5, 6, 7]
    assert _counter(engine) == 7


def test_a_missing_counter_row_starts_at_the_highest_seq(engine):
    """A schema made from the metadata (``create_all``) has no counter row: the first
    sequencing run creates it at the highest ``seq`` held, as migration 0011 does."""
    bot = make_chatbot(engine)
    connection = make_connection(engine, bot.id, "custom", "sms").id
    _numbered(engine, connection, "a", 2)
    with engine.begin() as conn:
        conn.execute(sa.delete(event_sequence))
    assert _counter(engine) is None
    _numbered(engine, connection, "b", 2)  # another customer: a conversation, 2 messages
    assert _seqs(engine) == [1, 2, 3, 4, 5, 6]
    assert _counter(engine) == 6
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(event_sequence)).scalar() == 1


def test_racing_writers_sequencers_and_deletes_never_give_a_number_twice(engine):
    """16 threads held at a barrier: twelve store messages for a chatbot that stays and
    number them, round after round; four store messages for a chatbot whose events they
    then delete (the newest, often), and again. No number a deleted event held is ever
    held by an event that stays: the counter, not the highest seq kept, gives the next
    ones. (A race: it catches numbers counted from the highest seq kept in most runs, not
    all; the cases above catch that every time. What it always checks is the counter
    under concurrency: nothing numbered twice, nothing left unnumbered, no error.)"""
    keep = make_chatbot(engine)
    gone = make_chatbot(engine)
    kept_connection = make_connection(engine, keep.id, "custom", "sms").id
    gone_connection = make_connection(engine, gone.id, "custom", "sms").id
    n = 16
    barrier = threading.Barrier(n)
    deleted: set[int] = set()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        try:
            barrier.wait()
            if i % 4:
                for round_ in range(6):  # each round a new customer: 2 events
                    _numbered(engine, kept_connection, f"k{i}-{round_}", 1)
                return
            for round_ in range(6):
                _numbered(engine, gone_connection, f"g{i}-{round_}", 2)
                with engine.begin() as conn:
                    gone_rows = conn.execute(
                        sa.delete(events)
                        .where(events.c.chatbot_id == gone.id, events.c.seq.is_not(None))
                        .returning(events.c.seq)
                    ).scalars()
                    with lock:
                        deleted.update(gone_rows)
        except BaseException as exc:  # reported below, with the thread's context
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    chat_events.sequence_all(engine)
    with engine.connect() as conn:
        kept = list(conn.scalars(sa.select(events.c.seq).where(events.c.chatbot_id == keep.id)))
    assert len(kept) == 12 * 6 * 2 and None not in kept
    assert deleted and not deleted & set(kept), sorted(deleted & set(kept))
    assert _counter(engine) >= max(kept + list(deleted))
