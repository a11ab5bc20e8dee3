"""Faults under load: a server killed mid-flight, PostgreSQL going away, two processes on
one SQLite file. Real subprocesses and real databases; nothing is mocked.

- **kill -9**: 32 clients create chatbots, conversations and replies, each with an
  ``Idempotency-Key``, retrying every create (same key, same body) until it is answered;
  meanwhile the serving process is SIGKILLed at random moments, three times, and started
  again on the same port. Afterwards SQL checks that every acknowledged create exists
  exactly once with what was sent, that nothing is half written (every key row holds its
  answer and the answer's resource exists, every conversation holds its slug's registry
  row, every message its conversation) and that no create is stored twice.
- **PostgreSQL stops and starts** under load: every answer meanwhile is a success or a
  503 problem+json with ``Retry-After``, none takes long (not a hang), ``/readyz`` says not
  ready, and the server serves again by itself within 5 s of PostgreSQL's return
  (measured).
- **two ``noclash serve`` processes on one SQLite file**: concurrent creates through both
  never answer 5xx.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from noclash.chat.conversations import insert_conversation
from noclash.chat.users import create_user
from noclash.db import tables
from noclash.db.migrate import upgrade
from tests.support import postgres
from tests.support.factories import make_chatbot
from tests.support.faulty_server import serving as faulty_serving
from tests.support.outbound import outbound_stack
from tests.support.serve import serving
from tests.support.server import free_port, start_live_server

PROBLEM = "application/problem+json"
CLIENTS = 32
KILLS = 3


# -- kill -9 under keyed creates ----------------------------------------------------------
@dataclass
class Acked:
    """Creates answered 201, by kind: (the sent name/title/text, the answered id)."""

    by_kind: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    broken: int = 0  # attempts whose connection broke or was refused (process dead)
    replayed: int = 0  # retries answered from the key's stored answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, sent: str, ident: str) -> None:
        with self.lock:
            self.by_kind.setdefault(kind, []).append((sent, ident))


@dataclass
class Client:
    """One client's user, chatbot and conversation (made in SQL before the server runs)."""

    token: str
    chatbot_id: str
    conversation_id: str


def _clients(engine: Engine) -> list[Client]:
    made = []
    for n in range(CLIENTS):
        user, token = create_user(engine, f"client-{n}-{uuid.uuid4().hex[:6]}@example.com")
        bot = make_chatbot(engine, owner_id=user.id)
        with engine.begin() as conn:
            conversation, _ = insert_conversation(conn, chatbot_id=bot.id, title="Help")
        made.append(Client(token, str(bot.id), str(conversation.id)))
    return made


def _request(me: Client, kind: str, sent: str) -> tuple[str, dict[str, str]]:
    if kind == "chatbot":
        return "/api/chatbots", {"name": sent}
    if kind == "conversation":
        return f"/api/chatbots/{me.chatbot_id}/conversations", {"title": sent}
    return f"/api/conversations/{me.conversation_id}/messages", {"text": sent}


def _until_answered(http: httpx.Client, path: str, body: dict, key: str, acked: Acked) -> Any:
    """Send the create until it is answered: a connection that breaks (the process died)
    or a transient 503/409-in-progress is retried with the same key and body."""
    while True:
        try:
            r = http.post(path, json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            with acked.lock:
                acked.broken += 1
            time.sleep(0.05)
            continue
        if r.status_code == 201:
            if r.headers.get("idempotent-replayed") == "true":
                with acked.lock:
                    acked.replayed += 1
            return r.json()
        transient = r.status_code == 503 or (
            r.status_code == 409 and r.json().get("type", "").endswith("in-progress")
        )
        if not transient or r.headers.get("content-type") != PROBLEM:
            acked.wrong.append(f"{path}: {r.status_code} {r.text[:200]}")
            return None
        time.sleep(0.05)


@pytest.mark.timeout(300)
def test_kill_9_under_32_clients_leaves_every_acknowledged_create_once(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    clients = _clients(engine)
    port = free_port()
    log = tmp_path / "server.log"
    stop = threading.Event()
    acked = Acked()
    kinds = ("chatbot", "conversation", "message")

    def work(n: int) -> None:
        me = clients[n]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {me.token}"},
            timeout=30,
        ) as http:
            i = 0
            while not stop.is_set():
                kind = kinds[(n + i) % len(kinds)]
                sent = f"c{n}-{kind}-{i}"
                path, body = _request(me, kind, sent)
                answer = _until_answered(http, path, body, str(uuid.uuid4()), acked)
                if answer is not None:
                    acked.add(kind, sent, answer["id"])
                i += 1

    server = faulty_serving(database_url, log, port=port)
    served = server.__enter__()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        for _kill in range(KILLS):
            time.sleep(random.uniform(0.4, 1.2))  # under load, at a moment nobody chose
            served.process.kill()
            served.process.wait(timeout=30)
            server.__exit__(None, None, None)
            server = faulty_serving(database_url, log, port=port)
            served = server.__enter__()
        time.sleep(0.8)  # the clients finish their retries on the last process
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        server.__exit__(None, None, None)

    assert acked.wrong == []
    assert all(acked.by_kind.get(kind) for kind in kinds), acked.by_kind.keys()
    # The kills hit requests in flight (else this test would prove nothing).
    assert acked.broken >= KILLS
    _check_once_and_whole(engine, acked)


def _check_once_and_whole(engine: Engine, acked: Acked) -> None:
    t = tables
    columns = {"chatbot": (t.chatbots, "name"), "conversation": (t.conversations, "title"),
               "message": (t.messages, "text")}  # fmt: skip
    with engine.connect() as conn:
        for kind, (table, column) in columns.items():
            stored = {str(r.id): r[1] for r in conn.execute(sa.select(table.c.id, table.c[column]))}
            copies = Counter(stored.values())
            for sent, ident in acked.by_kind[kind]:
                assert stored.get(ident) == sent, f"acknowledged {kind} {sent} is missing"
                assert copies[sent] == 1, f"{kind} {sent} stored {copies[sent]} times"
            # Creates nobody saw answered (the client stopped) are stored once at most too.
            assert not [v for v, n in copies.items() if n > 1 and v.startswith("c")]
        keys = list(conn.execute(sa.select(t.idempotency_keys)))
        assert keys and all(k.response_status == 201 for k in keys), "a key without its answer"
        ids = {
            str(r.id)
            for table in (t.chatbots, t.conversations, t.messages)
            for r in conn.execute(sa.select(table.c.id))
        }
        for k in keys:
            assert json.loads(k.response_body)["id"] in ids, f"key {k.key} answers a lost row"
        unregistered = conn.execute(
            sa.select(sa.func.count())
            .select_from(t.conversations)
            .outerjoin(
                t.conversation_slugs,
                sa.and_(
                    t.conversation_slugs.c.conversation_id == t.conversations.c.id,
                    t.conversation_slugs.c.slug == t.conversations.c.slug,
                ),
            )
            .where(t.conversation_slugs.c.slug.is_(None))
        ).scalar()
        assert unregistered == 0, "a conversation without its slug registry row"
        orphans = conn.execute(
            sa.select(sa.func.count())
            .select_from(t.messages)
            .where(~t.messages.c.conversation_id.in_(sa.select(t.conversations.c.id)))
        ).scalar()
        assert orphans == 0


# -- PostgreSQL stops and starts ------------------------------------------------------------
@pytest.mark.timeout(180)
def test_postgresql_away_is_503_and_not_ready_and_back_within_5_seconds() -> None:
    with postgres.throwaway_postgres() as pg:
        url = pg.get_uri()
        upgrade(url)
        with start_live_server(url, auth_cache_seconds=0) as live:
            token = live.user()
            _outage(live, pg, token)


def _outage(live, pg, token: str) -> None:
    phase = "up"
    stop = threading.Event()
    answers: list[tuple[str, str, int, float, float]] = []  # phase, who, status, at, took
    wrong: list[str] = []
    lock = threading.Lock()

    def record(who: str, started: float, r: httpx.Response | None, ok: int) -> None:
        took = time.monotonic() - started
        status = r.status_code if r is not None else 0
        with lock:
            answers.append((phase, who, status, time.monotonic(), took))
            if took > 5:
                wrong.append(f"{phase} {who}: took {took:.1f} s")
            if r is None:
                wrong.append(f"{phase} {who}: no answer")
            elif status != ok:
                if status != 503:
                    wrong.append(f"{phase} {who}: {status} {r.text[:200]}")
                elif r.headers.get("content-type") != PROBLEM or "retry-after" not in r.headers:
                    wrong.append(f"{phase} {who}: 503 without problem+json and Retry-After")

    def creates() -> None:
        with live.client(token) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    key = {"Idempotency-Key": str(uuid.uuid4())}
                    r = client.post("/api/chatbots", json={"name": "x"}, headers=key, timeout=10)
                except httpx.TransportError:
                    r = None
                record("create", started, r, 201)
                time.sleep(0.02)

    def ready() -> None:
        with live.client() as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    r = client.get("/readyz", timeout=10)
                except httpx.TransportError:
                    r = None
                record("readyz", started, r, 200)
                if r is not None and r.status_code == 503 and "not-ready" not in r.text:
                    wrong.append(f"{phase} readyz: 503 that is not not-ready: {r.text[:200]}")
                time.sleep(0.02)

    workers = [threading.Thread(target=creates) for _ in range(4)]
    workers.append(threading.Thread(target=ready))
    for w in workers:
        w.start()
    try:
        time.sleep(0.8)
        phase = "stopping"
        postgres.stop(pg)
        phase = "down"
        time.sleep(1.5)
        phase = "starting"
        pg.ensure_postgres_running()
        back = time.monotonic()
        phase = "back"
        time.sleep(5.5)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)

    assert wrong == []
    down = {(who, status) for p, who, status, _at, _took in answers if p == "down"}
    assert down == {("create", 503), ("readyz", 503)}, down
    for who, ok in (("create", 201), ("readyz", 200)):
        first = min(
            (
                at
                for p, w, status, at, _took in answers
                if p == "back" and w == who and status == ok
            ),
            default=None,
        )
        assert first is not None, f"{who} never recovered"
        assert first - back <= 5.0, f"{who} recovered {first - back:.1f} s after PostgreSQL"
        # Once recovered, it stays recovered.
        later = [s for p, w, s, at, _t in answers if p == "back" and w == who and at > first + 0.5]
        assert later and set(later) == {ok}, (who, Counter(later))


# -- two processes on one SQLite file -----------------------------------------------------
@pytest.mark.timeout(180)
def test_two_serve_processes_on_one_sqlite_file_never_answer_5xx(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with serving(url, tmp_path / "one") as first, serving(url, tmp_path / "two") as second:
        token = first.token
        assert token and second.token is None  # one database, one bootstrap
        bases = [first.base_url, second.base_url]
        setup = httpx.Client(base_url=bases[0], headers={"Authorization": f"Bearer {token}"})
        bot = setup.post("/api/chatbots", json={"name": "shared"}).json()
        conversation = setup.post(f"/api/chatbots/{bot['id']}/conversations", json={}).json()
        setup.close()
        barrier = threading.Barrier(CLIENTS)
        answers: list[tuple[int, str]] = []
        lock = threading.Lock()

        def work(n: int) -> None:
            with httpx.Client(
                base_url=bases[n % 2], headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as http:
                barrier.wait()
                for i in range(8):
                    path, body = [
                        ("/api/chatbots", {"name": f"c{n}-{i}"}),
                        (f"/api/chatbots/{bot['id']}/conversations", {"title": f"c{n}-{i}"}),
                        (f"/api/conversations/{conversation['id']}/messages", {"text": "hi"}),
                        (f"/api/widget/{bot['public_token']}/sessions", None),
                    ][(n + i) % 4]
                    r = http.post(path, json=body)
                    with lock:
                        answers.append((r.status_code, r.text[:200]))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        served_by_both = [s.stderr() for s in (first, second)]
    assert len(answers) == CLIENTS * 8
    assert [a for a in answers if a[0] != 201] == []
    assert not any("Traceback" in err for err in served_by_both)


@pytest.mark.timeout(180)
def test_a_dispatcher_sends_again_once_postgresql_is_back() -> None:
    """The dispatcher's connections skip the pool's ping (one more round trip per
    transaction): a connection the restart killed fails one claim or settlement, which is
    tried again on a new one. A reply stored once the database is back is sent, once, and
    recorded as sent."""
    with postgres.throwaway_postgres() as pg:
        url = pg.get_uri()
        upgrade(url)
        with outbound_stack(url) as stack:
            bot = stack.chatbot()
            connection, _token = stack.telegram_connection(bot["id"])
            conversation = stack.telegram_customer(connection, 5550001, "hello", update_id=1)
            before = stack.reply(conversation["id"], "before").json()
            stack.wait_delivery(conversation["id"], before["id"], "sent")

            postgres.stop(pg)
            time.sleep(1.0)
            pg.ensure_postgres_running()
            deadline = time.monotonic() + 10
            while (after := stack.reply(conversation["id"], "after")).status_code != 201:
                assert after.status_code == 503, after.text
                assert time.monotonic() < deadline, "the API did not come back"
                time.sleep(0.2)
            stack.wait_delivery(conversation["id"], after.json()["id"], "sent", timeout=20)
            assert [m["text"] for m in stack.telegram.delivered()] == ["before", "after"]
