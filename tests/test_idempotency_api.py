"""``Idempotency-Key`` over real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from noclash.api.app import create_app
from noclash.api.idempotency import creating_routes
from noclash.config import Settings
from noclash.db.tables import chatbots, idempotency_keys
from tests.support.creates import CREATING_ROUTES, prepare_create

PROBLEM = "application/problem+json"


def _count(engine, table=chatbots) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def _unanswered_keys(engine) -> int:
    """Key rows without a stored answer: the single transaction never commits one."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(idempotency_keys)
            .where(idempotency_keys.c.response_status.is_(None))
        ).scalar_one()


def test_every_creating_post_is_covered(tmp_path):
    """The middleware covers each POST declared 201; this list is the contract."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    assert creating_routes(app) == sorted(CREATING_ROUTES.values())
    assert CREATING_ROUTES["chatbots"] == "/api/chatbots"
    assert len(CREATING_ROUTES) == 7


@pytest.mark.parametrize("route", sorted(CREATING_ROUTES))
def test_a_keyed_create_commits_once(live_server, route):
    """Each creating route runs in the request's transaction: with a key, the create and
    its stored answer are ONE commit (a route committing its own would make it two)."""
    create = prepare_create(live_server.engine, route)
    commits = []

    def count(_conn) -> None:
        commits.append(1)

    sa.event.listen(live_server.engine, "commit", count)
    try:
        r = live_server.client().post(create.path, json=create.body, headers=create.headers)
    finally:
        sa.event.remove(live_server.engine, "commit", count)
    assert r.status_code == 201, r.text
    assert len(commits) == 1
    assert _unanswered_keys(live_server.engine) == 0


def test_retry_replays_the_first_response(live_server):
    client = live_server.client(live_server.user())
    headers = {"Idempotency-Key": "create-support-bot"}
    first = client.post("/api/chatbots", json={"name": "Support"}, headers=headers)
    second = client.post("/api/chatbots", json={"name": "Support"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _count(live_server.engine) == 1


def test_no_key_no_idempotency(live_server):
    client = live_server.client(live_server.user())
    for _ in range(2):
        assert client.post("/api/chatbots", json={"name": "x"}).status_code == 201
    assert _count(live_server.engine) == 2
    assert _count(live_server.engine, idempotency_keys) == 0


def test_same_key_other_body_is_422_and_stores_nothing(live_server):
    client = live_server.client(live_server.user())
    headers = {"Idempotency-Key": "k"}
    assert client.post("/api/chatbots", json={"name": "a"}, headers=headers).status_code == 201
    r = client.post("/api/chatbots", json={"name": "b"}, headers=headers)
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/idempotency-key-reused")
    assert r.json()["fields"][0]["field"] == "Idempotency-Key"
    assert _count(live_server.engine) == 1


def test_keys_are_scoped_per_caller(live_server):
    headers = {"Idempotency-Key": "same-key"}
    a = live_server.client(live_server.user())
    b = live_server.client(live_server.user())
    ra = a.post("/api/chatbots", json={"name": "bot"}, headers=headers)
    rb = b.post("/api/chatbots", json={"name": "bot"}, headers=headers)
    assert ra.status_code == rb.status_code == 201
    assert ra.json()["id"] != rb.json()["id"]
    assert "idempotent-replayed" not in rb.headers


def test_an_id_has_one_spelling_so_a_padded_path_cannot_dodge_its_key(live_server):
    """A chatbot's id padded with hyphens (or in braces, or as a URN) named the same
    chatbot, in a path too long for the middleware to scope a key to: two keyed creates
    made two conversations. Only the canonical spelling (or its bare 32 digits) names it:
    anything else is a 404, and nothing is stored."""
    client = live_server.client(live_server.user())
    bot = client.post("/api/chatbots", json={"name": "padded"}).json()["id"]
    for n, spelling in enumerate(("-" * 480 + bot, "{" + bot + "}", "urn:uuid:" + bot)):
        headers = {"Idempotency-Key": f"padded-{n}"}
        for _ in range(2):
            answer = client.post(f"/api/chatbots/{spelling}/conversations", json={},
                                 headers=headers)  # fmt: skip
            assert answer.status_code == 404, (spelling[:20], answer.text)
    assert client.get("/api/conversations").json()["items"] == []
    bare = client.post(f"/api/chatbots/{bot.replace('-', '')}/conversations", json={})
    assert bare.status_code == 201, bare.text


def test_invalid_key_is_400(live_server):
    client = live_server.client(live_server.user())
    r = client.post("/api/chatbots", json={"name": "a"}, headers={"Idempotency-Key": "x" * 300})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    assert _count(live_server.engine) == 0


def test_a_4xx_answer_is_replayed_too(live_server):
    """The stored answer is what the first request got, even an error (as Stripe does)."""
    client = live_server.client(live_server.user())
    headers = {"Idempotency-Key": "bad-body"}
    first = client.post("/api/chatbots", json={"name": ""}, headers=headers)
    second = client.post("/api/chatbots", json={"name": ""}, headers=headers)
    assert first.status_code == second.status_code == 422
    assert first.content == second.content
    assert second.headers["idempotent-replayed"] == "true"


def test_unauthenticated_request_passes_through(live_server):
    client = live_server.client()
    r = client.post("/api/chatbots", json={"name": "a"}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 401
    assert _count(live_server.engine, idempotency_keys) == 0


def test_32_concurrent_copies_of_one_keyed_request(database_url):
    """32 clients held at a barrier send one request with one key to a server with the
    default pool (10 + 20 overflow: fewer connections than copies): one chatbot, and 32
    identical answers (one original, 31 replays that waited in the database for it)."""
    from tests.support.server import start_live_server

    defaults = Settings()
    with start_live_server(
        database_url, pool_size=defaults.pool_size, pool_max_overflow=defaults.pool_max_overflow
    ) as server:
        token = server.user()
        n = 32
        barrier = threading.Barrier(n)
        key = str(uuid.uuid4())

        def run(_: int) -> httpx.Response:
            with httpx.Client(
                base_url=server.base_url,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                timeout=60,
            ) as client:
                barrier.wait()
                return client.post("/api/chatbots", json={"name": "Racing"})

        with ThreadPoolExecutor(n) as pool:
            responses = list(pool.map(run, range(n)))
        assert {r.status_code for r in responses} == {201}
        assert len({r.content for r in responses}) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == n - 1
        assert _count(server.engine) == 1
        assert _unanswered_keys(server.engine) == 0


def test_widget_session_and_message_retries(live_server):
    """A public caller's retries: one session, one message, replayed answers."""
    owner = live_server.client(live_server.user())
    bot = owner.post("/api/chatbots", json={"name": "Shop"}).json()
    visitor = live_server.client()
    base = f"/api/widget/{bot['public_token']}/sessions"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first, retry = visitor.post(base, headers=key), visitor.post(base, headers=key)
    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content and retry.headers["idempotent-replayed"] == "true"
    sid = first.json()["session_id"]
    url = f"{base}/{sid}/messages"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    sent = visitor.post(url, json={"text": "hello"}, headers=key)
    again = visitor.post(url, json={"text": "hello"}, headers=key)
    assert sent.status_code == again.status_code == 201
    assert again.content == sent.content and again.headers["idempotent-replayed"] == "true"
    with live_server.engine.connect() as conn:
        counts = [
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("sessions", "messages")
        ]
    assert counts == [1, 1]


def test_public_callers_need_an_unguessable_key(live_server):
    owner = live_server.client(live_server.user())
    bot = owner.post("/api/chatbots", json={"name": "Shop"}).json()
    r = live_server.client().post(
        f"/api/widget/{bot['public_token']}/sessions", headers={"Idempotency-Key": "1"}
    )
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    assert _count(live_server.engine, idempotency_keys) == 0


def test_conversation_create_retry(live_server):
    client = live_server.client(live_server.user())
    bot = client.post("/api/chatbots", json={"name": "Support"}).json()
    url = f"/api/chatbots/{bot['id']}/conversations"
    key = {"Idempotency-Key": "conv-1"}
    first = client.post(url, json={"title": "Billing"}, headers=key)
    retry = client.post(url, json={"title": "Billing"}, headers=key)
    assert retry.content == first.content and retry.json()["slug"] == "billing"
    other = client.post(url, json={"title": "Billing"})
    assert other.json()["slug"].startswith("billing-")


def _hold_claim(engine, token: str, key: str, body: bytes, path: str = "/api/chatbots"):
    """Claim ``key`` the way another process serving it would: in a transaction of its own,
    not committed yet. Returns (connection, claim); the caller commits or rolls back."""
    from datetime import timedelta

    from noclash.chat.users import authenticate
    from noclash.unique import idempotency as keys

    user = authenticate(engine, token)
    conn = engine.connect()
    conn.begin()
    claimed = keys.claim(
        conn,
        idempotency_keys,
        scope=f"user:{user.id}",
        key=key,
        method="POST",
        path=path,
        request_hash=keys.request_hash("POST", path, body),
        ttl=timedelta(hours=1),
    )
    assert isinstance(claimed, keys.Claimed)
    return conn, claimed


def _post_raw(client: httpx.Client, key: str, body: bytes) -> httpx.Response:
    headers = {"Idempotency-Key": key, "content-type": "application/json"}
    return client.post("/api/chatbots", content=body, headers=headers)


def test_a_duplicate_waits_for_the_first_held_elsewhere(live_server):
    """The first request is running in another process, its claim an uncommitted row of
    its transaction: the duplicate waits in the database (PostgreSQL: on that index entry;
    SQLite: for the write lock), then replays what the first committed, running nothing."""
    from noclash.unique import idempotency as keys

    token = live_server.user()
    body = b'{"name": "Slow"}'
    conn, claimed = _hold_claim(live_server.engine, token, "slow", body)
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_post_raw, live_server.client(token), "slow", body)
            threading.Event().wait(0.5)
            assert not pending.done()
            elsewhere = keys.StoredResponse(201, [("content-type", "application/json")], b'{"x":1}')
            assert keys.complete(conn, idempotency_keys, claimed.claim_id, elsewhere)
            conn.commit()
            r = pending.result(timeout=30)
    finally:
        conn.close()
    assert r.status_code == 201 and r.content == b'{"x":1}'
    assert r.headers["idempotent-replayed"] == "true"
    assert _count(live_server.engine) == 0


def test_a_duplicate_of_a_request_that_failed_elsewhere_runs_at_once(live_server):
    """The first holder rolls back (its request failed, or its process died): the key is
    free at that instant, and the waiting duplicate claims it and runs, once."""
    token = live_server.user()
    body = b'{"name": "Second try"}'
    conn, _claimed = _hold_claim(live_server.engine, token, "retry-me", body)
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_post_raw, live_server.client(token), "retry-me", body)
            threading.Event().wait(0.5)
            assert not pending.done()
            conn.rollback()
            r = pending.result(timeout=30)
    finally:
        conn.close()
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert r.json()["name"] == "Second try"
    assert _count(live_server.engine) == 1
    assert _unanswered_keys(live_server.engine) == 0


def test_an_expired_key_runs_anew(database_url):
    """Keys live NOCLASH_IDEMPOTENCY_TTL_SECONDS; after that the same key creates again."""
    import time

    from tests.support.server import start_live_server

    with start_live_server(database_url, idempotency_ttl_seconds=1) as server:
        client = server.client(server.user())
        headers = {"Idempotency-Key": "short-lived"}
        first = client.post("/api/chatbots", json={"name": "a"}, headers=headers)
        replay = client.post("/api/chatbots", json={"name": "a"}, headers=headers)
        time.sleep(1.2)
        again = client.post("/api/chatbots", json={"name": "a"}, headers=headers)
        assert replay.headers.get("idempotent-replayed") == "true"
        assert again.status_code == 201 and "idempotent-replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]
        assert _count(server.engine) == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_duplicate_still_in_progress_after_the_wait_is_409(database_url):
    """PostgreSQL: the first holder does not commit within idempotency_wait_seconds (the
    claim's lock_timeout): the duplicate gets a 409 naming the header, and runs nothing."""
    import time

    from tests.support.server import start_live_server

    with start_live_server(database_url, idempotency_wait_seconds=0.3) as server:
        token = server.user()
        body = b'{"name":"Slow"}'
        conn, _claimed = _hold_claim(server.engine, token, "busy", body)
        try:
            started = time.monotonic()
            r = _post_raw(server.client(token), "busy", body)
            waited = time.monotonic() - started
        finally:
            conn.rollback()
            conn.close()
        assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
        assert r.headers["retry-after"] == "1"
        assert r.json()["fields"] == ["Idempotency-Key"]
        assert r.json()["type"].endswith("/idempotency-key-in-progress")
        assert 0.3 <= waited < 5
        assert _count(server.engine) == 0
        # The bound covered the claim only, and ended with its transaction: the same key
        # runs now, and so does a request without one.
        assert _post_raw(server.client(token), "busy", body).status_code == 201
        assert server.client(token).post("/api/chatbots", json={"name": "x"}).status_code == 201


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_writers_queue_for_the_lock_and_a_held_lock_is_a_503(database_url):
    """SQLite: every writer, keyed or not, queues for the one write lock (BEGIN IMMEDIATE,
    NOCLASH_SQLITE_BUSY_TIMEOUT_MS). Held past that, the answer is 503 with Retry-After,
    never a 500, and nothing is stored."""
    from tests.support.server import start_live_server

    with start_live_server(database_url, sqlite_busy_timeout_ms=300) as server:
        token = server.user()
        body = b'{"name":"Slow"}'
        conn, _claimed = _hold_claim(server.engine, token, "busy", body)
        try:
            keyed = _post_raw(server.client(token), "busy", body)
            plain = server.client(token).post("/api/chatbots", json={"name": "x"})
        finally:
            conn.rollback()
            conn.close()
        for r in (keyed, plain):
            assert r.status_code == 503 and r.headers["content-type"] == PROBLEM
            assert r.headers["retry-after"] == "1"
        assert _count(server.engine) == 0
        assert _post_raw(server.client(token), "busy", body).status_code == 201


def test_an_oversized_body_is_413_before_any_key_is_claimed(live_server):
    """The body limit sits outside the middleware: declared or chunked, too big is a 413
    and no key row is written."""
    client = live_server.client(live_server.user())
    big = b'{"name": "' + b"x" * (live_server.settings.max_body_bytes + 10) + b'"}'
    headers = {"Idempotency-Key": "big", "content-type": "application/json"}
    declared = client.post("/api/chatbots", content=big, headers=headers)
    chunked = client.post(
        "/api/chatbots",
        content=(big[i : i + 4096] for i in range(0, len(big), 4096)),
        headers=headers,
    )
    assert declared.status_code == chunked.status_code == 413
    assert _count(live_server.engine, idempotency_keys) == 0
    assert _count(live_server.engine) == 0


@pytest.mark.parametrize("key", ["not-a-uuid", "3f1c2b7e-8a4d-4e5f-9b6a-0c1d2e3f4a5b"])
def test_a_keyed_create_without_a_token_where_one_is_needed_is_a_401(live_server, key):
    """Found by the fuzzer (tests/test_fuzz.py): without a token, a keyed create on a route
    that needs one was scoped as an anonymous caller, so a key that is no UUID answered 400
    before the 401, and a UUID key claimed a row to store the 401 in. The route's 401 comes
    first now, and nothing is claimed for a caller it refuses."""
    owner = live_server.client(live_server.user())
    bot = owner.post("/api/chatbots", json={"name": "b"}).json()
    anonymous = live_server.client()
    r = anonymous.post(
        f"/api/chatbots/{bot['id']}/conversations",
        json={"title": "t"},
        headers={"Idempotency-Key": key},
    )
    assert r.status_code == 401, r.text
    assert r.json()["type"].endswith("/unauthenticated")
    assert _count(live_server.engine, idempotency_keys) == 0
