"""The pull API narrowed: to one conversation (``conversation_id``), to some types (``type``).

On SQLite and PostgreSQL through the live server. A type filter looks through at most
:data:`noclash.chat.events.TYPE_WINDOW` events per page, so its pages may be short or
empty while ``next_cursor`` goes on: the tests follow the cursor to the end and compare
what came with the unfiltered history filtered here, on a history long enough (written
with the domain's own :func:`noclash.chat.events.record_all`) to span several windows.
"""

from __future__ import annotations

from uuid import UUID

import httpx
import pytest

from noclash.chat import events
from noclash.chat.events import Event, EventType
from tests.support.server import LiveServer

FAILED, CREATED = EventType.DELIVERY_FAILED.value, EventType.MESSAGE_CREATED.value


def _bot_and_conversations(live: LiveServer, token: str, count: int) -> tuple[dict, list[str]]:
    """A chatbot with a custom connection and ``count`` conversations, one message each."""
    client = live.client(token)
    bot = client.post("/api/chatbots", json={"name": "filters"}).json()
    connection = client.post(
        f"/api/chatbots/{bot['id']}/connections", json={"channel": "custom", "external_id": "x"}
    ).json()
    conversations = []
    for n in range(count):
        body = {"psid": f"p{n}", "message_id": f"m{n}", "text": f"hello {n}"}
        answer = client.post(f"/api/connections/{connection['id']}/inbound", json=body)
        assert answer.status_code == 201, answer.text
        conversations.append(answer.json()["conversation_id"])
    return bot, conversations


def _pages(client: httpx.Client, **params) -> list[list[dict]]:
    """Every page, following next_cursor until it is null."""
    pages, after = [], None
    while True:
        query = params | ({"after": after} if after else {})
        answer = client.get("/api/events", params=query)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json()["items"])
        after = answer.json()["next_cursor"]
        if after is None:
            return pages


def _all(client: httpx.Client, **params) -> list[dict]:
    return [e for page in _pages(client, limit=200, **params) for e in page]


def test_conversation_id_narrows_to_one_conversation(live_server):
    token = live_server.user()
    client = live_server.client(token)
    bot, (first, second) = _bot_and_conversations(live_server, token, 2)
    for conversation in (first, second, first):
        said = client.post(f"/api/conversations/{conversation}/messages", json={"text": "ok"})
        assert said.status_code == 201, said.text
    client.post(f"/api/conversations/{second}/close")
    everything = _all(client)
    for conversation in (first, second):
        mine = [e for e in everything if e["conversation_id"] == conversation]
        assert _all(client, conversation_id=conversation) == mine
        assert _all(client, conversation_id=conversation, chatbot_id=bot["id"]) == mine
        # Pages of one: the same events, each once, in order.
        paged = _pages(client, conversation_id=conversation, limit=1)
        assert [e for page in paged for e in page] == mine
        assert all(len(page) == 1 for page in paged)
    closed = _all(client, conversation_id=second, type="conversation.status_changed")
    assert [e["data"]["to"] for e in closed] == ["CLOSED"]


def test_a_conversation_not_yours_or_not_of_the_chatbot_named_is_a_404(live_server):
    a, b = live_server.user(), live_server.user()
    _bot_a, (conversation,) = _bot_and_conversations(live_server, a, 1)
    bot_a2, _ = _bot_and_conversations(live_server, a, 0)
    b_client, a_client = live_server.client(b), live_server.client(a)
    for client, params in (
        (b_client, {"conversation_id": conversation}),
        (a_client, {"conversation_id": conversation, "chatbot_id": bot_a2["id"]}),
        (a_client, {"conversation_id": "01a24d22-0e5d-7d52-9b6e-c8d1e098f7e5"}),
    ):
        answer = client.get("/api/events", params=params)
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    invalid = a_client.get("/api/events", params={"conversation_id": "nope"})
    assert invalid.status_code == 422 and "conversation_id" in invalid.text


def test_an_unknown_type_is_a_422_naming_it(live_server):
    client = live_server.client(live_server.user())
    answer = client.get("/api/events", params={"type": ["message.created", "message.deleted"]})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "type" in answer.text


@pytest.mark.slow
def test_a_type_filter_pages_through_a_long_history_in_windows(live_server):
    """2,600 events, of which a few are delivery.failed (at the start, in the middle of
    the second window, at a window's very end and in the last, partial window): followed
    to the end, the filtered pages hold exactly those, once each, in order, whatever the
    page size; no page is longer than its limit."""
    token = live_server.user()
    client = live_server.client(token)
    bot, (conversation,) = _bot_and_conversations(live_server, token, 1)
    already = len(_all(client))  # the conversation's own two events
    window = events.TYPE_WINDOW
    failed_at = {0, window + 500, 2 * window - already - 1, 2 * window + 300, 2 * window + 301}
    batch = []
    for n in range(2600 - already):
        kind = EventType.DELIVERY_FAILED if n in failed_at else EventType.MESSAGE_CREATED
        batch.append(Event(kind, f"bulk-{n}", UUID(bot["id"]), UUID(conversation), {"n": n}))
    with live_server.engine.begin() as conn:
        for start in range(0, len(batch), 200):
            events.record_all(conn, batch[start : start + 200], webhook=False)
    everything = _all(client)
    assert len(everything) == 2600
    expected = [e for e in everything if e["type"] == FAILED]
    assert [e["data"]["n"] for e in expected] == sorted(failed_at)
    for limit in (1, 2, 50):
        pages = _pages(client, type=FAILED, limit=limit)
        assert [e for page in pages for e in page] == expected, limit
        assert all(len(page) <= limit for page in pages)
        # A short page only where a window ran out, never a cursor past the end.
        assert len(pages) <= len(expected) + 2600 // window + 1
    # Both types asked (in any order, repeated): every event, as unfiltered.
    both = _pages(client, type=[CREATED, FAILED, "conversation.created", CREATED], limit=200)
    assert [e for page in both for e in page] == everything
    # With conversation_id and chatbot_id too, starting after an event of another type.
    start = everything[window + 10]["id"]
    narrowed = _all(
        client, type=FAILED, conversation_id=conversation, chatbot_id=bot["id"], after=start
    )
    assert narrowed == [e for e in expected if e["data"]["n"] > window + 10 - already]
