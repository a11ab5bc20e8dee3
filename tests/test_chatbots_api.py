"""Chatbots over real HTTP: collision-proof public tokens, isolation, clean 4xx answers."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from noclash.db.tables import chatbots

PROBLEM = "application/problem+json"


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(chatbots)).scalar_one()


def test_create_returns_the_record(live_server):
    client = live_server.client(live_server.user())
    r = client.post(
        "/api/chatbots",
        json={"name": "Support", "slack_channel_id": "C123", "require_auth": True},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {
        "id",
        "name",
        "public_token",
        "require_auth",
        "slack_channel_id",
        "asana_project_id",
        "allowed_origins",
        "created_at",
        "webhook_url",
        "webhook_events",
        "has_webhook_secret",
    }
    assert uuid.UUID(body["public_token"]).version == 4
    assert uuid.UUID(body["id"]).version == 7
    assert body["slack_channel_id"] == "C123" and body["asana_project_id"] is None
    assert client.get(f"/api/chatbots/{body['id']}").json() == body


def test_200_concurrent_creations_get_distinct_v4_tokens(live_server):
    """32 HTTP clients held at a barrier create 200 chatbots: all 201, all tokens unique."""
    token = live_server.user()
    clients, total = 32, 200
    barrier = threading.Barrier(clients)
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]

    def run(i: int) -> list[httpx.Response]:
        with httpx.Client(
            base_url=live_server.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ) as client:
            barrier.wait()
            return [
                client.post("/api/chatbots", json={"name": f"bot {i}-{n}"})
                for n in range(per_client[i])
            ]

    with ThreadPoolExecutor(clients) as pool:
        responses = [r for batch in pool.map(run, range(clients)) for r in batch]
    assert [r.status_code for r in responses] == [201] * total
    tokens = [uuid.UUID(r.json()["public_token"]) for r in responses]
    assert len(set(tokens)) == total
    assert {t.version for t in tokens} == {4}
    with live_server.engine.connect() as conn:
        dupes = conn.execute(
            sa.text(
                "SELECT public_token, COUNT(*) FROM chatbots GROUP BY 1 HAVING COUNT(*) > 1"
            )
        ).all()
    assert dupes == []
    assert _count(live_server.engine) == total


def test_list_paginates_with_a_cursor(live_server):
    client = live_server.client(live_server.user())
    made = [client.post("/api/chatbots", json={"name": f"b{i}"}).json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/chatbots", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    bad = client.get("/api/chatbots", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM


def test_users_see_only_their_own_chatbots(live_server):
    alice = live_server.client(live_server.user())
    bob = live_server.client(live_server.user())
    mine = alice.post("/api/chatbots", json={"name": "alice's"}).json()
    r = bob.get(f"/api/chatbots/{mine['id']}")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert bob.get("/api/chatbots").json() == {"items": [], "next_cursor": None}
    assert alice.get(f"/api/chatbots/{mine['id']}").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nc_0000000000000000000000000000000"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "unknown", "wrong-scheme", "empty"],
)
def test_auth_failures_are_401_and_store_nothing(live_server, headers):
    r = httpx.post(
        f"{live_server.base_url}/api/chatbots", json={"name": "x"}, headers=headers, timeout=30
    )
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["status"] == 401
    assert _count(live_server.engine) == 0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"name": ', 400, None),
        (b'{"name": ""}', 422, "name"),
        (b'{"name": "x", "color": "red"}', 422, "color"),
        (b'{"name": "' + b"x" * 201 + b'"}', 422, "name"),
        (b'{"require_auth": "maybe", "name": "x"}', 422, "require_auth"),
        (b"[]", 422, ""),
    ],
    ids=["malformed", "empty-name", "unknown-field", "too-long", "bad-bool", "not-object"],
)
def test_bad_input_is_a_clear_4xx_and_stores_nothing(live_server, body, status, field):
    client = live_server.client(live_server.user())
    r = client.post("/api/chatbots", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    problem = r.json()
    assert r.headers["content-type"] == PROBLEM
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert "Traceback" not in r.text
    if field:
        assert field in [f["field"] for f in problem["fields"]]
    assert _count(live_server.engine) == 0


def test_oversized_body_is_413(live_server):
    client = live_server.client(live_server.user())
    r = client.post("/api/chatbots", content=b"{" + b" " * (70 * 1024) + b"}")
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM


def test_a_small_chunked_body_is_counted_and_accepted(live_server):
    """Without Content-Length the body limit counts the bytes; under the limit the create
    goes through exactly as with a declared length."""
    client = live_server.client(live_server.user())
    body = b'{"name": "chunked bot"}'
    r = client.post(
        "/api/chatbots",
        content=(body[i : i + 5] for i in range(0, len(body), 5)),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "chunked bot"


@pytest.mark.parametrize(
    "token",
    ["not-a-uuid", "abc123", "00000000-0000-4000-8000-000000000000", "%27%20OR%201=1", "x" * 300],
)
def test_public_view_of_malformed_or_unknown_token_is_404(live_server, token):
    r = live_server.client().get(f"/api/public/chatbots/{token}")
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == PROBLEM


def test_public_view_and_require_auth(live_server):
    owner = live_server.client(live_server.user())
    open_bot = owner.post("/api/chatbots", json={"name": "open"}).json()
    closed_bot = owner.post("/api/chatbots", json={"name": "closed", "require_auth": True}).json()
    anonymous = live_server.client()
    view = anonymous.get(f"/api/public/chatbots/{open_bot['public_token']}")
    assert view.status_code == 200
    assert view.json() == {
        "name": "open",
        "public_token": open_bot["public_token"],
        "require_auth": False,
    }
    assert anonymous.get(f"/api/public/chatbots/{closed_bot['public_token']}").status_code == 401
    visitor = live_server.client(live_server.user())
    assert visitor.get(f"/api/public/chatbots/{closed_bot['public_token']}").status_code == 200


def test_unknown_route_is_a_problem(live_server):
    r = live_server.client().get("/api/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


def test_health_and_readiness(live_server):
    client = live_server.client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_a_forced_token_collision_is_a_409_naming_the_field(live_server, monkeypatch):
    """Make every new token the same (the database default on PostgreSQL, the generator on
    SQLite): the unique index fires and the API answers 409 problem+json, never a 500."""
    fixed = uuid.UUID("00000000-0000-4000-8000-000000000001")
    if live_server.engine.dialect.name == "postgresql":
        with live_server.engine.begin() as conn:
            conn.execute(
                sa.text(f"ALTER TABLE chatbots ALTER COLUMN public_token SET DEFAULT '{fixed}'")
            )
    else:
        monkeypatch.setattr("noclash.chat.chatbots.uuid4", lambda: fixed)
    client = live_server.client(live_server.user())
    assert client.post("/api/chatbots", json={"name": "first"}).status_code == 201
    r = client.post("/api/chatbots", json={"name": "second"})
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["fields"] == ["public_token"]
    assert problem["constraint"] == "uq_chatbots_public_token"
    assert problem["type"].endswith("/unique-violation")
    assert _count(live_server.engine) == 1


def test_a_nul_character_is_a_422_on_both_databases(live_server):
    """PostgreSQL cannot store NUL in text; the answer must be the same clear 4xx on both
    databases, never a 500 from the driver, and nothing is stored."""
    client = live_server.client(live_server.user())
    r = client.post("/api/chatbots", json={"name": "a\u0000b"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert "name" in [f["field"] for f in r.json()["fields"]]
    assert _count(live_server.engine) == 0


def test_a_nul_character_in_a_query_is_never_a_500(live_server):
    client = live_server.client(live_server.user())
    r = client.get("/api/conversations", params={"psid": "a\u0000b"})
    assert r.status_code in (200, 422), r.text
    assert r.headers["content-type"].startswith(("application/json", PROBLEM))
