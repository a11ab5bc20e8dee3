"""``/api/users`` over real HTTP on SQLite and PostgreSQL: ``is_admin`` means something.

The routes mirror ``noclash user list|create|rotate-token|revoke``; the effect of each is
checked through the API itself (the new token works, the old one does not) and in SQL (the
token is never stored, not even for an Idempotency-Key replay).
"""

from __future__ import annotations

import sqlalchemy as sa

from noclash.chat.users import create_user
from noclash.db.tables import idempotency_keys, users

PROBLEM = "application/problem+json"


def _admin(live):
    _user, token = create_user(live.engine, "root@example.com", is_admin=True)
    return live.client(token)


def test_a_non_admin_is_403_on_every_users_route(live_server):
    member, token = create_user(live_server.engine, "member@example.com")
    client = live_server.client(token)
    for method, path, body in [
        ("GET", "/api/users", None),
        ("POST", "/api/users", {"email": "x@example.com"}),
        ("POST", f"/api/users/{member.id}/rotate-token", None),
        ("POST", f"/api/users/{member.id}/revoke", None),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"] == "https://noclash.dev/problems/forbidden"
    assert client.get("/api/chatbots").status_code == 200  # the member's token still works
    with live_server.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(users)).scalar() == 1


def test_create_list_rotate_revoke(live_server):
    admin = _admin(live_server)
    made = admin.post("/api/users", json={"email": "Agent@Example.com"})
    assert made.status_code == 201, made.text
    agent = made.json()
    assert agent["email"] == "agent@example.com" and agent["is_admin"] is False
    token = agent.pop("token")
    assert token.startswith("nc_")
    as_agent = live_server.client(token)
    assert as_agent.get("/api/chatbots").status_code == 200

    listed = admin.get("/api/users").json()
    assert [u["email"] for u in listed["items"]] == ["root@example.com", "agent@example.com"]
    assert all("token" not in u for u in listed["items"])
    page = admin.get("/api/users", params={"limit": 1}).json()
    assert len(page["items"]) == 1 and page["next_cursor"]

    again = admin.post("/api/users", json={"email": "agent@example.com"})
    assert again.status_code == 409 and again.json()["fields"] == ["email"]
    bad = admin.post("/api/users", json={"email": "not an address"})
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "email"

    revoked = admin.post(f"/api/users/{agent['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["token_revoked_at"]
    assert "token" not in revoked.json()
    assert as_agent.get("/api/chatbots").status_code == 401  # at once, in this process

    rotated = admin.post(f"/api/users/{agent['id']}/rotate-token")
    assert rotated.status_code == 200 and rotated.json()["token_revoked_at"] is None
    new_token = rotated.json()["token"]
    assert new_token != token
    assert live_server.client(new_token).get("/api/chatbots").status_code == 200
    assert as_agent.get("/api/chatbots").status_code == 401

    for path in [
        "/api/users/nope/revoke",
        f"/api/users/{'0' * 8}-0000-7000-8000-{'0' * 12}/revoke",
    ]:
        assert admin.post(path).status_code == 404

    # The database holds hashes only: neither token is anywhere in it.
    with live_server.engine.connect() as conn:
        stored = [str(v) for row in conn.execute(sa.select(users)) for v in row]
    assert not any(t in v for v in stored for t in (token, new_token))


def test_an_admin_can_make_an_admin_who_can_then_administer(live_server):
    admin = _admin(live_server)
    made = admin.post("/api/users", json={"email": "second@example.com", "is_admin": True})
    assert made.status_code == 201 and made.json()["is_admin"] is True
    second = live_server.client(made.json()["token"])
    assert second.get("/api/users").status_code == 200
    assert (
        admin.post("/api/users", json={"email": "x@example.com", "is_admin": "yes"}).status_code
        == 422
    )


def test_a_created_token_is_never_stored_for_a_replay(live_server):
    """The answer holds the token: an Idempotency-Key on the create is refused (400) before
    anything runs, so no key row can hold it; a plain retry is a 409 on the e-mail."""
    admin = _admin(live_server)
    key = {"Idempotency-Key": "create-agent"}
    refused = admin.post("/api/users", json={"email": "agent@example.com"}, headers=key)
    assert refused.status_code == 400, refused.text
    assert refused.json()["type"] == "https://noclash.dev/problems/invalid-idempotency-key"
    with live_server.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(idempotency_keys)).scalar() == 0
        assert (
            conn.execute(
                sa.select(sa.func.count())
                .select_from(users)
                .where(users.c.email == "agent@example.com")
            ).scalar()
            == 0
        )
    assert admin.post("/api/users", json={"email": "agent@example.com"}).status_code == 201
