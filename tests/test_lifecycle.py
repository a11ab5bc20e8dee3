"""Conversation lifecycle over real HTTP: close, snooze, reopen, replies, lists, ownership."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest


class Setup:
    """A user, a chatbot with one custom connection, and a way to deliver messages."""

    def __init__(self, live_server) -> None:
        self.client = live_server.client(live_server.user())
        self.bot = self.client.post("/api/chatbots", json={"name": "b"}).json()["id"]
        self.conn = self.client.post(
            f"/api/chatbots/{self.bot}/connections",
            json={"channel": "custom", "external_id": f"site-{self.bot}"},
        ).json()["id"]
        self._n = 0

    def deliver(self, psid: str = "p1", mid: str | None = None, **extra) -> dict:
        self._n += 1
        body = {"psid": psid, "message_id": mid or f"m{self._n}", "text": f"hi {self._n}"}
        response = self.client.post(f"/api/connections/{self.conn}/inbound", json=body | extra)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def act(self, conversation_id: str, action: str, **kw):
        return self.client.post(f"/api/conversations/{conversation_id}/{action}", **kw)

    def conversations(self, **params) -> list[dict]:
        response = self.client.get("/api/conversations", params=params | {"limit": 200})
        assert response.status_code == 200, response.text
        return response.json()["items"]


@pytest.fixture
def s(live_server) -> Setup:
    return Setup(live_server)


def _problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


def test_close_then_new_message_opens_a_new_conversation(s):
    first = s.deliver()["conversation_id"]
    s.deliver()
    closed = s.act(first, "close")
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"
    assert closed.json()["closed_at"] is not None
    second = s.deliver()
    assert second["created_conversation"] and second["conversation_id"] != first
    old = s.client.get(f"/api/conversations/{first}/messages").json()["items"]
    assert len(old) == 2 and s.client.get(f"/api/conversations/{first}").json()["status"] == (
        "CLOSED"
    )


def test_three_closes_four_conversations_one_active(s):
    for _ in range(3):
        conv = s.deliver()["conversation_id"]
        assert s.act(conv, "close").status_code == 200
    s.deliver()
    convs = s.conversations(psid="p1")
    assert len(convs) == 4
    assert [c["status"] for c in convs] == ["CLOSED", "CLOSED", "CLOSED", "OPEN"]
    assert len(s.conversations(psid="p1", status="OPEN")) == 1


def test_close_is_idempotent(s):
    conv = s.deliver()["conversation_id"]
    first = s.act(conv, "close").json()
    again = s.act(conv, "close")
    assert again.status_code == 200 and again.json() == first


def test_snooze_then_message_reopens(s):
    conv = s.deliver()["conversation_id"]
    snoozed = s.act(conv, "snooze", json={"until": "2999-01-01T00:00:00Z"})
    assert snoozed.status_code == 200, snoozed.text
    assert snoozed.json()["status"] == "SNOOZED" and snoozed.json()["snoozed_until"]
    assert s.deliver()["conversation_id"] == conv
    woken = s.client.get(f"/api/conversations/{conv}").json()
    assert woken["status"] == "OPEN" and woken["snoozed_until"] is None


def test_snooze_rules(s):
    conv = s.deliver()["conversation_id"]
    assert s.act(conv, "snooze").json()["status"] == "SNOOZED"  # no body: indefinitely
    _problem(s.act(conv, "snooze", json={"until": "2000-01-01T00:00:00Z"}), 422)
    _problem(s.act(conv, "snooze", json={"until": "2999-01-01T00:00:00"}), 422)  # naive
    s.act(conv, "close")
    problem = _problem(s.act(conv, "snooze"), 409)
    assert problem["fields"] == ["status"] and problem["conversation_id"] == conv


def test_reopen(s):
    conv = s.deliver()["conversation_id"]
    assert s.act(conv, "reopen").json()["status"] == "OPEN"  # OPEN stays OPEN
    s.act(conv, "snooze")
    assert s.act(conv, "reopen").json()["status"] == "OPEN"  # wakes a snooze
    s.act(conv, "close")
    reopened = s.act(conv, "reopen").json()
    assert reopened["status"] == "OPEN" and reopened["closed_at"] is None
    assert s.deliver()["conversation_id"] == conv


def test_reopen_beside_an_active_one_is_409_naming_it(s):
    old = s.deliver()["conversation_id"]
    s.act(old, "close")
    new = s.deliver()["conversation_id"]
    problem = _problem(s.act(old, "reopen"), 409)
    assert problem["conversation_id"] == new
    assert problem["fields"] == ["connection_id", "psid"]
    assert new in problem["detail"]
    assert s.client.get(f"/api/conversations/{old}").json()["status"] == "CLOSED"
    # Another customer's active conversation does not block.
    s.deliver(psid="p2")
    s.act(new, "close")
    assert s.act(old, "reopen").json()["status"] == "OPEN"


def test_concurrent_reopens_leave_one_active(s):
    """Several closed conversations of one customer reopened at once: one wins."""
    ids = []
    for _ in range(6):
        ids.append(s.deliver()["conversation_id"])
        s.act(ids[-1], "close")
    barrier = threading.Barrier(len(ids))

    def reopen(conv):
        barrier.wait()
        return s.act(conv, "reopen")

    with ThreadPoolExecutor(len(ids)) as pool:
        responses = list(pool.map(reopen, ids))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * (len(ids) - 1)
    (winner,) = [r.json()["id"] for r in responses if r.status_code == 200]
    assert {r.json()["conversation_id"] for r in responses if r.status_code == 409} == {winner}
    assert [c["id"] for c in s.conversations(psid="p1", status="OPEN")] == [winner]


def test_agent_reply(s):
    conv = s.deliver(sent_at="2026-01-01T00:00:00Z")["conversation_id"]
    reply = s.client.post(f"/api/conversations/{conv}/messages", json={"text": "How can I help?"})
    assert reply.status_code == 201, reply.text
    assert reply.json()["direction"] == "out" and reply.json()["platform_message_id"] is None
    items = s.client.get(f"/api/conversations/{conv}/messages").json()["items"]
    assert [m["direction"] for m in items] == ["in", "out"]
    after = s.client.get(f"/api/conversations/{conv}").json()["last_message_at"]
    assert after > "2026-01-01T00:00:00"
    _problem(s.client.post(f"/api/conversations/{conv}/messages", json={"text": ""}), 422)
    s.act(conv, "close")
    problem = _problem(
        s.client.post(f"/api/conversations/{conv}/messages", json={"text": "x"}), 409
    )
    assert problem["fields"] == ["status"]


def test_lists_filter_and_paginate(s):
    for psid in ("a", "b", "c", "d", "e"):
        s.deliver(psid=psid)
    s.act(s.conversations(psid="a")[0]["id"], "close")
    assert {c["psid"] for c in s.conversations(status="OPEN")} == {"b", "c", "d", "e"}
    assert len(s.conversations(chatbot_id=s.bot)) == 5
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = s.client.get("/api/conversations", params=params).json()
        seen += [c["psid"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    _problem(s.client.get("/api/conversations", params={"status": "open"}), 422)
    _problem(s.client.get("/api/conversations", params={"cursor": "zzz"}), 422)
    conv = s.conversations(psid="b")[0]["id"]
    for i in range(3):
        s.client.post(f"/api/conversations/{conv}/messages", json={"text": f"r{i}"})
    first = s.client.get(f"/api/conversations/{conv}/messages", params={"limit": 2}).json()
    rest = s.client.get(
        f"/api/conversations/{conv}/messages", params={"cursor": first["next_cursor"]}
    ).json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 2 and rest["next_cursor"] is None


def test_other_users_conversations_are_404(s, live_server):
    conv = s.deliver()["conversation_id"]
    stranger = live_server.client(live_server.user())
    for method, path in [
        ("get", f"/api/conversations/{conv}"),
        ("get", f"/api/conversations/{conv}/messages"),
        ("post", f"/api/conversations/{conv}/close"),
        ("post", f"/api/conversations/{conv}/reopen"),
        ("post", f"/api/conversations/{conv}/snooze"),
        ("get", "/api/conversations/not-a-uuid"),
    ]:
        _problem(getattr(stranger, method)(path), 404)
    _problem(stranger.post(f"/api/conversations/{conv}/messages", json={"text": "x"}), 404)
    _problem(stranger.get("/api/conversations", params={"chatbot_id": s.bot}), 404)
    assert stranger.get("/api/conversations").json()["items"] == []
    assert s.client.get(f"/api/conversations/{conv}").json()["status"] == "OPEN"


def test_retried_reply_with_idempotency_key_is_stored_once(s):
    conv = s.deliver()["conversation_id"]
    headers = {"Idempotency-Key": "reply-1"}
    path = f"/api/conversations/{conv}/messages"
    first = s.client.post(path, json={"text": "On its way"}, headers=headers)
    again = s.client.post(path, json={"text": "On its way"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    items = s.client.get(path).json()["items"]
    assert [m["direction"] for m in items] == ["in", "out"]
