"""No route lets one tenant reach another's data, on SQLite and PostgreSQL.

Owner A has a chatbot with a custom and a Telegram connection, a conversation with
messages, a widget session, a keyed create. Every route of the app is then tried on A's
ids by a second user B, by an administrator (``is_admin`` manages users, not tenants' data)
and by an anonymous caller; each answer must be the refusal the route documents (404 for
someone else's record, exactly like a missing one; 401 without a token; 403 for a
non-admin on /api/users), no answer may carry anything of A's, and afterwards every row
of A's reads exactly as before.

The route list is the app's own (its OpenAPI document): a route added tomorrow without a
probe here fails :func:`test_every_route_is_probed`, so it cannot ship untried.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from noclash.api.app import create_app
from noclash.chat.users import create_user
from noclash.config import Settings
from noclash.db.tables import chatbots

PROBLEM = "application/problem+json"


@dataclass
class Tenant:
    client: httpx.Client
    user_id: str
    bot: dict
    custom: dict
    telegram: dict
    conversation: dict
    message_ids: list[str]
    session: dict
    psid: str
    secret_text: str
    keyed_bot: dict = field(default_factory=dict)
    webhook_secret: str = ""
    event_ids: list[str] = field(default_factory=list)

    def ids(self) -> dict[str, str]:
        """The values a route's path parameters take for this tenant's records."""
        return {
            "chatbot_id": self.bot["id"],
            "connection_id": self.custom["id"],
            "conversation_id": self.conversation["id"],
            "slug": self.conversation["slug"],
            "public_token": self.bot["public_token"],
            "session_id": self.session["session_id"],
            "user_id": self.user_id,
            "message_id": self.message_ids[-1],
            "event_id": self.event_ids[-1],
        }

    def private(self) -> set[str]:
        """What no other caller may ever read back."""
        return {
            self.bot["id"],
            self.custom["id"],
            self.telegram["id"],
            self.conversation["id"],
            self.conversation["slug"],
            self.session["conversation_id"],
            self.keyed_bot["id"],
            self.psid,
            *self.message_ids,
            *self.event_ids,
            self.secret_text,
            self.bot["webhook_url"],
            self.webhook_secret,
        }


def _tenant(live, email: str) -> Tenant:
    user, token = create_user(live.engine, email)
    client = live.client(token)
    name = email.split("@")[0]
    secret_text = f"{name} wrote this, {uuid.uuid4().hex}"
    webhook_url = f"https://{name}-bot.example/hooks/{uuid.uuid4().hex}"
    bot = client.post(
        "/api/chatbots", json={"name": f"{name}'s bot", "webhook_url": webhook_url}
    ).json()
    webhook_secret = client.post(f"/api/chatbots/{bot['id']}/webhook-secret").json()
    bot = client.get(f"/api/chatbots/{bot['id']}").json()
    assert bot["webhook_url"] == webhook_url and bot["has_webhook_secret"]
    custom = client.post(
        f"/api/chatbots/{bot['id']}/connections", json={"channel": "custom", "external_id": "sms"}
    ).json()
    telegram = client.post(
        f"/api/chatbots/{bot['id']}/connections",
        json={"channel": "telegram", "external_id": f"bot-{uuid.uuid4().hex}", "secret": "s3"},
    ).json()
    psid = f"customer-{uuid.uuid4().hex[:8]}"
    inbound = f"/api/connections/{custom['id']}/inbound"
    first = client.post(inbound, json={"psid": psid, "message_id": "m1", "text": secret_text})
    client.post(inbound, json={"psid": psid, "message_id": "m2", "text": "more"})
    conversation = client.get(f"/api/conversations/{first.json()['conversation_id']}").json()
    reply = client.post(f"/api/conversations/{conversation['id']}/messages", json={"text": "ok"})
    messages = client.get(f"/api/conversations/{conversation['id']}/messages").json()["items"]
    assert reply.status_code == 201 and len(messages) == 3
    session = live.client().post(f"/api/widget/{bot['public_token']}/sessions").json()
    tenant = Tenant(
        client, str(user.id), bot, custom, telegram, conversation,
        [m["id"] for m in messages], session, psid, secret_text,
    )  # fmt: skip
    keyed = client.post(
        "/api/chatbots", json={"name": "keyed"}, headers={"Idempotency-Key": f"key-of-{name}"}
    )
    assert keyed.status_code == 201
    tenant.keyed_bot = keyed.json()
    tenant.webhook_secret = webhook_secret["webhook_secret"]
    pulled = client.get("/api/events", params={"chatbot_id": bot["id"], "limit": 200})
    tenant.event_ids = [e["id"] for e in pulled.json()["items"]]
    assert tenant.event_ids
    return tenant


def _snapshot(a: Tenant) -> dict[str, Any]:
    """Everything of A's, as A reads it."""
    c = a.client
    conv = a.conversation["id"]
    return {
        "bot": c.get(f"/api/chatbots/{a.bot['id']}").json(),
        "connections": c.get(f"/api/chatbots/{a.bot['id']}/connections").json(),
        "conversation": c.get(f"/api/conversations/{conv}").json(),
        "messages": c.get(f"/api/conversations/{conv}/messages").json(),
        "session": c.get(f"/api/conversations/{a.session['conversation_id']}").json(),
        "token_works": c.get("/api/chatbots").status_code,
    }


# -- the probes: one per (method, path template) of the app ------------------------------
Body = dict[str, Any] | None


@dataclass(frozen=True)
class Probe:
    """A request on A's ids and what each kind of caller must get.

    ``user`` is for B and for the admin, ``anonymous`` for no token. ``users_route``:
    the admin is allowed there (it is user administration), so only B is refused.
    ``params`` / ``body``: what to send (a parameter's value may name an id:
    ``"{chatbot_id}"``). ``ids``: override path values (e.g. B's session with A's token).
    ``stream``: the answer is an event stream that does not end: the probe reads the
    status and headers (and a refusal's whole body), then drops the connection.
    """

    user: int | tuple[int, ...]
    anonymous: int | tuple[int, ...]
    body: Body = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    ids: Callable[[Tenant, Tenant], dict[str, str]] | None = None
    users_route: bool = False
    stream: bool = False


def _b_session_with_a_token(a: Tenant, b: Tenant) -> dict[str, str]:
    return {"session_id": b.session["session_id"]}


PROBES: dict[tuple[str, str], Probe] = {
    ("GET", "/healthz"): Probe(200, 200),
    ("GET", "/readyz"): Probe(200, 200),
    ("GET", "/api/chatbots"): Probe(200, 401),
    ("POST", "/api/chatbots"): Probe(201, 401, body={"name": "mine"}),
    ("GET", "/api/chatbots/{chatbot_id}"): Probe(404, 401),
    ("PATCH", "/api/chatbots/{chatbot_id}"): Probe(404, 401, body={"name": "pwned"}),
    ("DELETE", "/api/chatbots/{chatbot_id}"): Probe(404, 401),
    # Another's secret is neither rotated nor shown (A's stored secret is checked below).
    ("POST", "/api/chatbots/{chatbot_id}/webhook-secret"): Probe(404, 401),
    # Nothing is sent to another's webhook (A's is a name nobody answers at anyway).
    ("POST", "/api/chatbots/{chatbot_id}/webhook-ping"): Probe(404, 401),
    # Public by design: what a widget shows (name, token, require_auth), nothing else.
    ("GET", "/api/public/chatbots/{public_token}"): Probe(200, 200),
    ("GET", "/api/chatbots/{chatbot_id}/connections"): Probe(404, 401),
    ("POST", "/api/chatbots/{chatbot_id}/connections"): Probe(
        404, 401, body={"channel": "custom", "external_id": "mine"}
    ),
    ("GET", "/api/connections/{connection_id}"): Probe(404, 401),
    ("DELETE", "/api/connections/{connection_id}"): Probe(404, 401),
    ("PATCH", "/api/connections/{connection_id}"): Probe(404, 401, body={"secret": "pwned"}),
    ("POST", "/api/messages/{message_id}/retry"): Probe(404, 401),
    # A's failed replies are not sent again (A's Telegram connection: one that sends).
    ("POST", "/api/connections/{connection_id}/retry-failed"): Probe(
        404, 401, ids=lambda a, b: {"connection_id": a.telegram["id"]}
    ),
    # B's own events only (the answer is checked for anything of A's); A's chatbot: 404.
    ("GET", "/api/events"): Probe(200, 401),
    # A's event, its webhook delivery, and sending it or A's failed ones again.
    ("GET", "/api/events/{event_id}"): Probe(404, 401),
    ("POST", "/api/events/{event_id}/retry"): Probe(404, 401),
    ("POST", "/api/chatbots/{chatbot_id}/events/retry-failed"): Probe(404, 401),
    # A's chatbot's live stream: 404 like its pull API (B's own: tests/test_stream.py).
    ("GET", "/api/stream"): Probe(
        404, 401, params={"chatbot_id": "{chatbot_id}"}, stream=True
    ),
    ("POST", "/api/connections/{connection_id}/inbound"): Probe(
        404, 401, body={"psid": "intruder", "message_id": "x1", "text": "injected"}
    ),
    ("POST", "/api/chatbots/{chatbot_id}/conversations"): Probe(
        404, 401, body={"title": "injected", "psid": "intruder"}
    ),
    ("GET", "/api/chatbots/{chatbot_id}/conversations/by-slug/{slug}"): Probe(404, 401),
    ("GET", "/api/chatbots/{chatbot_id}/conversations/counts"): Probe(404, 401),
    ("GET", "/api/conversations"): Probe(200, 401),
    ("GET", "/api/conversations/{conversation_id}"): Probe(404, 401),
    ("PATCH", "/api/conversations/{conversation_id}"): Probe(404, 401, body={"title": "pwned"}),
    ("POST", "/api/conversations/{conversation_id}/close"): Probe(404, 401),
    ("POST", "/api/conversations/{conversation_id}/snooze"): Probe(404, 401),
    ("POST", "/api/conversations/{conversation_id}/reopen"): Probe(404, 401),
    ("GET", "/api/conversations/{conversation_id}/messages"): Probe(404, 401),
    ("POST", "/api/conversations/{conversation_id}/messages"): Probe(
        404, 401, body={"text": "injected"}
    ),
    # Public: anyone may start a visitor session on a chatbot (that is the widget); it is
    # a new session and a new conversation, never A's (checked below).
    ("POST", "/api/widget/{public_token}/sessions"): Probe(201, 201),
    # A's public token with B's session: the pairing is wrong, so 404 for everyone.
    ("POST", "/api/widget/{public_token}/sessions/{session_id}/messages"): Probe(
        404, 404, body={"text": "injected"}, ids=_b_session_with_a_token
    ),
    # B's session cannot read A's visitors (nor A's session B's): the pairing is wrong.
    ("GET", "/api/widget/{public_token}/sessions/{session_id}/messages"): Probe(
        404, 404, ids=_b_session_with_a_token
    ),
    ("GET", "/api/widget/{public_token}/sessions/{session_id}/stream"): Probe(
        404, 404, ids=_b_session_with_a_token, stream=True
    ),
    # Not configured in the suite: nothing unsigned is ever stored.
    ("GET", "/webhooks/meta"): Probe(
        403, 403, params={"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "1"}
    ),
    ("POST", "/webhooks/meta"): Probe(503, 503, body={"object": "page", "entry": []}),
    # A's Telegram connection without its secret (the custom one is not Telegram: 404).
    ("POST", "/webhooks/telegram/{connection_id}"): Probe(
        401,
        401,
        body={"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": 1}}},
        headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"},
        ids=lambda a, b: {"connection_id": a.telegram["id"]},
    ),
    ("GET", "/api/users"): Probe(403, 401, users_route=True),
    ("POST", "/api/users"): Probe(403, 401, body={"email": "new@example.com"}, users_route=True),
    ("POST", "/api/users/{user_id}/rotate-token"): Probe(403, 401, users_route=True),
    ("POST", "/api/users/{user_id}/revoke"): Probe(403, 401, users_route=True),
}


def _operations(tmp_path) -> set[tuple[str, str]]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'routes.db'}"))
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }


def test_every_route_is_probed(tmp_path):
    """The probe table is the app's route list: a new route needs its probe here."""
    operations = _operations(tmp_path)
    assert operations - set(PROBES) == set(), "routes nobody tries as another tenant"
    assert set(PROBES) - operations == set(), "probes of routes that no longer exist"


def _send(client: httpx.Client, method: str, template: str, probe: Probe, ids: dict[str, str]):
    params = {k: v.format(**ids) for k, v in probe.params.items()} if probe.params else None
    request = client.build_request(
        method, template.format(**ids), json=probe.body, params=params, headers=probe.headers
    )
    if not probe.stream:
        return client.send(request)
    with client.stream(request.method, request.url, headers=request.headers) as response:
        # A refusal is a whole problem document; a stream never ends: its head only.
        body = response.read() if response.status_code >= 400 else b""
    return httpx.Response(
        response.status_code, headers=response.headers, content=body, request=request
    )


def _statuses(expected: int | tuple[int, ...]) -> tuple[int, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def test_no_route_reaches_another_tenants_data(live_server, tmp_path):
    a = _tenant(live_server, "a@example.com")
    b = _tenant(live_server, "b@example.com")
    _admin, admin_token = create_user(live_server.engine, "root@example.com", is_admin=True)
    callers = {
        "intruder": live_server.client(b.client.headers["authorization"].split()[1]),
        "admin": live_server.client(admin_token),
        "anonymous": live_server.client(),
    }
    before = _snapshot(a)
    private = a.private()
    tried: set[tuple[str, str]] = set()
    wrong = []
    for (method, template), probe in PROBES.items():
        ids = a.ids() | (probe.ids(a, b) if probe.ids else {})
        for who, client in callers.items():
            if who == "admin" and probe.users_route:
                continue  # user administration is the admin's job (tests/test_users_api.py)
            expected = probe.anonymous if who == "anonymous" else probe.user
            r = _send(client, method, template, probe, ids)
            tried.add((method, template))
            if r.status_code not in _statuses(expected):
                wrong.append(f"{who} {method} {template}: {r.status_code} {r.text[:160]}")
            if r.status_code >= 400 and r.headers.get("content-type") != PROBLEM:
                wrong.append(f"{who} {method} {template}: {r.status_code} is not a problem")
            leaked = {value for value in private if value in r.text}
            if leaked:
                wrong.append(f"{who} {method} {template} leaked {sorted(leaked)}")
            if (method, template) == ("POST", "/api/widget/{public_token}/sessions"):
                assert r.json()["session_id"] != a.session["session_id"]
    assert wrong == []
    assert tried == _operations(tmp_path)
    assert _snapshot(a) == before
    with live_server.engine.connect() as conn:
        stored = conn.execute(
            sa.select(chatbots.c.webhook_secret).where(chatbots.c.id == uuid.UUID(a.bot["id"]))
        ).scalar_one()
    assert stored == a.webhook_secret, "A's webhook secret was rotated by someone else"

    # Filters on A's ids find nothing for B: a 404 for A's chatbot, an empty page for A's
    # customer.
    intruder = callers["intruder"]
    assert intruder.get("/api/conversations", params={"chatbot_id": a.bot["id"]}).status_code == 404
    assert intruder.get("/api/conversations", params={"psid": a.psid}).json()["items"] == []


def test_claiming_another_tenants_ids(live_server):
    """Claims B might try with what A's pages show: A's public token with B's session, B's
    token with A's session, A's custom channel name, A's customer id, A's Telegram bot."""
    a = _tenant(live_server, "a@example.com")
    b = _tenant(live_server, "b@example.com")
    before = _snapshot(a)
    visitor = live_server.client()
    for token, session in [
        (a.bot["public_token"], b.session["session_id"]),
        (b.bot["public_token"], a.session["session_id"]),
    ]:
        r = visitor.post(f"/api/widget/{token}/sessions/{session}/messages", json={"text": "hi"})
        assert r.status_code == 404, r.text

    # A custom channel's name is the chatbot's own: B's "sms" is another connection, and a
    # message to it for A's customer id lands in B's conversation, never A's.
    assert b.custom["external_id"] == a.custom["external_id"] == "sms"
    assert b.custom["id"] != a.custom["id"]
    body = {"psid": a.psid, "message_id": "m-claim", "text": "B's text"}
    got = b.client.post(f"/api/connections/{b.custom['id']}/inbound", json=body)
    assert got.status_code == 201 and got.json()["conversation_id"] != a.conversation["id"]
    # A platform id names one receiver in the world: B cannot connect A's bot (409, and
    # the answer names the key, not A).
    taken = b.client.post(
        f"/api/chatbots/{b.bot['id']}/connections",
        json={"channel": "telegram", "external_id": a.telegram["external_id"], "secret": "x"},
    )
    assert taken.status_code == 409 and a.telegram["id"] not in taken.text
    assert _snapshot(a) == before


def test_another_callers_idempotency_key_is_not_their_answer(live_server):
    """A key is scoped to its caller: B (and an anonymous visitor) sending A's key, with
    A's very body, runs a request of its own and never receives A's stored answer."""
    a = _tenant(live_server, "a@example.com")
    b = _tenant(live_server, "b@example.com")
    headers = {"Idempotency-Key": "key-of-a"}
    again = b.client.post("/api/chatbots", json={"name": "keyed"}, headers=headers)
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] not in (a.keyed_bot["id"], b.keyed_bot["id"])
    replay = b.client.post("/api/chatbots", json={"name": "keyed"}, headers=headers)
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.json()["id"] == again.json()["id"]
    # A's keyed request on A's own resource, replayed by B: B gets B's 404, not A's 201.
    key = {"Idempotency-Key": str(uuid.uuid4())}
    path = f"/api/chatbots/{a.bot['id']}/conversations"
    assert a.client.post(path, json={"title": "t"}, headers=key).status_code == 201
    stolen = b.client.post(path, json={"title": "t"}, headers=key)
    assert stolen.status_code == 404 and "idempotent-replayed" not in stolen.headers
    # A widget visitor's key on A's session, sent with B's token (another scope) and by
    # another visitor on another session: neither replays the first visitor's answer.
    token, session = a.bot["public_token"], a.session["session_id"]
    url = f"/api/widget/{token}/sessions/{session}/messages"
    first = live_server.client().post(url, json={"text": "hello"}, headers=key)
    assert first.status_code == 201
    other = f"/api/widget/{b.bot['public_token']}/sessions/{b.session['session_id']}/messages"
    elsewhere = live_server.client().post(other, json={"text": "hello"}, headers=key)
    assert elsewhere.status_code == 201 and "idempotent-replayed" not in elsewhere.headers
    assert elsewhere.json()["message_id"] != first.json()["message_id"]


@pytest.mark.parametrize("who", ["intruder", "anonymous"])
def test_a_deleted_tenants_ids_stay_unreachable(live_server, who):
    """After A deletes its chatbot, its ids are unknown to everyone, A included: a 404
    (anonymous: 401), and creating under them is refused."""
    a = _tenant(live_server, "a@example.com")
    b = _tenant(live_server, "b@example.com")
    assert a.client.delete(f"/api/chatbots/{a.bot['id']}").status_code == 204
    client = b.client if who == "intruder" else live_server.client()
    expected = 404 if who == "intruder" else 401
    for path in [
        f"/api/chatbots/{a.bot['id']}",
        f"/api/conversations/{a.conversation['id']}",
        f"/api/connections/{a.custom['id']}",
    ]:
        assert client.get(path).status_code == expected
        assert a.client.get(path).status_code == 404
    r = live_server.client().post(f"/api/widget/{a.bot['public_token']}/sessions")
    assert r.status_code == 404


def test_a_widget_connection_cannot_claim_another_chatbots_public_token(live_server):
    """B connects a widget whose external_id is A's public token before A's first visitor:
    A's visitors would land in B's connection, readable by B. It must be refused."""
    owner = live_server.client(live_server.user())
    a_bot = owner.post("/api/chatbots", json={"name": "A"}).json()
    intruder = live_server.client(live_server.user())
    b_bot = intruder.post("/api/chatbots", json={"name": "B"}).json()
    claim = intruder.post(
        f"/api/chatbots/{b_bot['id']}/connections",
        json={"channel": "widget", "external_id": a_bot["public_token"]},
    )
    assert claim.status_code in (403, 404, 409, 422), claim.text
