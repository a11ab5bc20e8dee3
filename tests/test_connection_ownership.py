"""An access token is proven to own the connection's external id before it is stored.

The platforms are the loopback Graph API and Bot API (tests/support/platforms.py): noclash
asks them whose token it was given (Meta ``GET /me``, Telegram ``getMe``), on SQLite and
PostgreSQL, through the real app.
"""

from __future__ import annotations

import threading
from uuid import UUID

import httpx
import pytest
import sqlalchemy as sa

from noclash.channels.telegram import NOT_A_BOT_TOKEN
from noclash.db.tables import connections
from tests.support.outbound import Stack, outbound_stack
from tests.support.platforms import wait_for
from tests.support.server import free_port

PAGE, IG = "104871234567890", "17841400000000000"


@pytest.fixture
def stack(database_url):
    with outbound_stack(database_url, dispatcher=False) as s:
        yield s


def _connect(stack, bot_id: str, **body):
    return stack.api.post(f"/api/chatbots/{bot_id}/connections", json=body)


def _field(answer) -> list[str]:
    return [f["field"] for f in answer.json().get("fields") or []]


def test_a_meta_page_token_is_checked_against_the_page_id(stack):
    bot = stack.chatbot()
    page = stack.meta.add_page(PAGE, "page-token", instagram_id=IG)
    stack.meta.add_page("999", "other-page-token")
    ok = _connect(stack, bot["id"], channel="messenger", external_id=PAGE,
                  access_token="page-token")  # fmt: skip
    assert ok.status_code == 201, ok.text
    assert ok.json()["has_access_token"] is True and "access_token" not in ok.json()
    # Another Page's token for this page id: 422 naming access_token, nothing stored.
    bot2 = stack.chatbot()
    wrong = _connect(stack, bot2["id"], channel="messenger", external_id="555",
                     access_token="other-page-token")  # fmt: skip
    assert wrong.status_code == 422 and _field(wrong) == ["access_token"]
    assert "999" in wrong.json()["detail"]
    invalid = _connect(stack, bot2["id"], channel="messenger", external_id="555",
                       access_token="not-a-token")  # fmt: skip
    assert invalid.status_code == 422 and _field(invalid) == ["access_token"]
    listed = stack.api.get(f"/api/chatbots/{bot2['id']}/connections").json()["items"]
    assert listed == []
    # Instagram: the token's Page must have this Instagram business account.
    insta = _connect(stack, bot2["id"], channel="instagram", external_id=IG,
                     access_token=page.token)  # fmt: skip
    assert insta.status_code == 201, insta.text
    not_ig = _connect(stack, bot2["id"], channel="instagram", external_id="17841499999",
                      access_token=page.token)  # fmt: skip
    assert not_ig.status_code == 422 and _field(not_ig) == ["access_token"]


def test_a_telegram_token_is_checked_against_the_bot_id(stack):
    bot = stack.chatbot()
    tg = stack.telegram.add_bot(424242)
    ok = _connect(stack, bot["id"], channel="telegram", external_id="424242", secret="s",
                  access_token=tg.token)  # fmt: skip
    assert ok.status_code == 201, ok.text
    other = stack.telegram.add_bot(111)
    wrong = _connect(stack, bot["id"], channel="telegram", external_id="222", secret="s",
                     access_token=other.token)  # fmt: skip
    assert wrong.status_code == 422 and _field(wrong) == ["access_token"]


@pytest.mark.parametrize(
    "token",
    ["424242:abc/../../bot111:other", "424242:abc?x=1", "424242:abc#", "424242", "x:abc"],
)
def test_a_string_not_shaped_like_a_telegram_token_is_refused_unasked(stack, token):
    """A bot token travels in the Bot API's path: a "/", "?", "#" or ".." would make
    getMe (and every send) another call. Refused with a 422 before anything is asked."""
    bot = stack.chatbot()
    stack.telegram.add_bot(111, token="111:other")
    answer = _connect(stack, bot["id"], channel="telegram", external_id="111", secret="s",
                      access_token=token)  # fmt: skip
    assert answer.status_code == 422 and _field(answer) == ["access_token"], answer.text
    assert "not a Telegram bot token" in answer.json()["detail"]
    assert stack.telegram.received == []


def test_a_stored_token_not_shaped_like_one_fails_its_sends_unasked(database_url):
    """A token written around the API's check (or before it existed) is never put in a
    Bot API path: the reply's delivery fails at once, saying why, and Telegram is not
    asked anything."""
    with outbound_stack(database_url) as stack:
        bot = stack.chatbot()
        connection, _token = stack.telegram_connection(bot["id"])
        conversation = stack.telegram_customer(connection, 5550123, "hi", 9400)["id"]
        with stack.server.engine.begin() as conn:
            conn.execute(
                sa.update(connections)
                .where(connections.c.id == UUID(connection["id"]))
                .values(access_token="7001:x/../../bot111:other")
            )
        answer = stack.reply(conversation, "hello")
        assert answer.status_code == 201, answer.text
        message = stack.wait_delivery(conversation, answer.json()["id"], "failed", "sent")
        assert message["delivery"]["status"] == "failed"
        assert message["delivery"]["last_error"] == NOT_A_BOT_TOKEN
        assert stack.telegram.sent == []


def test_a_server_may_require_proof_of_every_platform_account(database_url):
    """NOCLASH_REQUIRE_ACCESS_TOKEN=1 (tenants who do not trust each other): a Messenger,
    Instagram or Telegram connection without a token is a 422 naming access_token, so
    nobody can connect another's page id first and receive its messages; with a proven
    token it is made, and the widget and custom channels need none."""
    with outbound_stack(database_url, dispatcher=False, require_access_token=True) as stack:
        bot = stack.chatbot()
        for channel, external_id in (("messenger", PAGE), ("instagram", IG), ("telegram", "7")):
            refused = _connect(stack, bot["id"], channel=channel, external_id=external_id)
            assert refused.status_code == 422 and _field(refused) == ["access_token"], (
                refused.text
            )
        stack.meta_connection(bot["id"], PAGE)  # with the Page's token: made
        for channel, external_id in (("custom", "sms"), ("widget", bot["public_token"])):
            assert _connect(stack, bot["id"], channel=channel,
                            external_id=external_id).status_code == 201  # fmt: skip
        listed = stack.api.get(f"/api/chatbots/{bot['id']}/connections").json()["items"]
        assert sorted(c["channel"] for c in listed) == ["custom", "messenger", "widget"]


def test_widget_and_custom_connections_take_no_access_token(stack):
    bot = stack.chatbot()
    for channel, external_id in (("custom", "sms"), ("widget", bot["public_token"])):
        answer = _connect(stack, bot["id"], channel=channel, external_id=external_id,
                          access_token="anything")  # fmt: skip
        assert answer.status_code == 422 and _field(answer) == ["access_token"], answer.text


def test_a_widget_connection_is_only_for_its_own_chatbots_token(stack):
    mine, theirs = stack.chatbot(), stack.chatbot()
    refused = _connect(stack, mine["id"], channel="widget", external_id=theirs["public_token"])
    assert refused.status_code == 422 and _field(refused) == ["external_id"]
    ok = _connect(stack, mine["id"], channel="widget", external_id=mine["public_token"])
    assert ok.status_code == 201


def test_patch_rotates_and_clears_the_token_after_proving_it(stack):
    bot = stack.chatbot()
    stack.meta.add_page(PAGE, "first-token")
    connection = _connect(stack, bot["id"], channel="messenger", external_id=PAGE,
                          access_token="first-token").json()  # fmt: skip
    stack.meta.add_page(PAGE, "rotated-token")
    stack.meta.add_page("888", "someone-elses-token")
    path = f"/api/connections/{connection['id']}"
    wrong = stack.api.patch(path, json={"access_token": "someone-elses-token"})
    assert wrong.status_code == 422 and _field(wrong) == ["access_token"]
    rotated = stack.api.patch(path, json={"access_token": "rotated-token"})
    assert rotated.status_code == 200 and rotated.json()["has_access_token"] is True
    cleared = stack.api.patch(path, json={"access_token": None})
    assert cleared.status_code == 200 and cleared.json()["has_access_token"] is False
    kept = stack.api.patch(path, json={})
    assert kept.status_code == 200 and kept.json()["has_access_token"] is False
    unknown = stack.api.patch(path, json={"external_id": "elsewhere"})
    assert unknown.status_code == 422
    # A Telegram connection keeps its webhook secret.
    tg = stack.telegram.add_bot(31337)
    telegram = _connect(stack, bot["id"], channel="telegram", external_id="31337", secret="s",
                        access_token=tg.token).json()  # fmt: skip
    no_secret = stack.api.patch(f"/api/connections/{telegram['id']}", json={"secret": None})
    assert no_secret.status_code == 422 and _field(no_secret) == ["secret"]
    rotated_secret = stack.api.patch(f"/api/connections/{telegram['id']}", json={"secret": "s2"})
    assert rotated_secret.status_code == 200 and rotated_secret.json()["has_secret"] is True
    stranger = stack.server.client(stack.server.user())
    assert stranger.patch(path, json={"access_token": None}).status_code == 404


def test_a_platform_that_cannot_be_reached_is_503_and_stores_nothing(database_url):
    dead = f"http://127.0.0.1:{free_port()}"
    with outbound_stack(
        database_url, dispatcher=False, meta_graph_url=dead, telegram_api_url=dead
    ) as stack:
        bot = stack.chatbot()
        answer = _connect(stack, bot["id"], channel="messenger", external_id=PAGE,
                          access_token="page-token")  # fmt: skip
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"]
        assert answer.json()["type"].endswith("/platform-unavailable")
        assert stack.api.get(f"/api/chatbots/{bot['id']}/connections").json()["items"] == []


def test_a_keyed_create_takes_no_lock_while_the_platform_is_asked(database_url):
    """A create under an Idempotency-Key claims its key at the route's first database
    call, after the ownership proof: while noclash waits for the platform to say whose
    token it was given, other writes go on. (Claimed before the route, the key's
    transaction held SQLite's one write lock for as long as the platform took, and every
    other writer of the server waited or failed.) A retry afterwards replays the stored
    answer without asking the platform again."""
    with outbound_stack(database_url, dispatcher=False, platform_timeout_seconds=20) as stack:
        bot = stack.chatbot()
        telegram_bot = stack.telegram.add_bot(7001)
        url = f"/api/chatbots/{bot['id']}/connections"
        body = {"channel": "telegram", "external_id": "7001", "secret": "s3cret",
                "access_token": telegram_bot.token}  # fmt: skip
        key = {"Idempotency-Key": "connect-bot-7001"}
        answers: dict[str, httpx.Response] = {}

        def keyed() -> None:
            answers["keyed"] = stack.api.post(url, json=body, headers=key)

        def asked() -> int:
            return sum(r.path.endswith("/getMe") for r in stack.telegram.received)

        worker = threading.Thread(target=keyed)
        with stack.telegram.held():
            worker.start()
            assert wait_for(lambda: asked() == 1)
            meanwhile = stack.api.post("/api/chatbots", json={"name": "meanwhile"}, timeout=10)
            assert meanwhile.status_code == 201, meanwhile.text
            assert worker.is_alive(), "the keyed create ended before the platform answered"
        worker.join(timeout=30)
        assert answers["keyed"].status_code == 201, answers["keyed"].text

        again = stack.api.post(url, json=body, headers=key)
        assert again.status_code == 201, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == answers["keyed"].json()
        assert asked() == 1  # the replay did not ask the platform again


def test_concurrent_copies_of_a_keyed_create_that_asks_the_platform_make_one(database_url):
    """16 copies of one keyed connection create, released together: each asks the
    platform before it reaches the database (the key is claimed at the route's first
    database call), then one claims the key and the others find it decided there and
    replay its answer. One connection; sixteen identical 201s. (The platform may take
    longer than the suite's one second to answer sixteen getMe at once on a loaded
    machine, which would be an honest 503: this test is about the key, so it waits.)"""
    with outbound_stack(database_url, dispatcher=False, platform_timeout_seconds=15.0) as s:
        _sixteen_copies(s)


def _sixteen_copies(stack: Stack) -> None:
    bot = stack.chatbot()
    telegram_bot = stack.telegram.add_bot(7002)
    url = f"/api/chatbots/{bot['id']}/connections"
    body = {"channel": "telegram", "external_id": "7002", "secret": "s3cret",
            "access_token": telegram_bot.token}  # fmt: skip
    copies = 16
    barrier = threading.Barrier(copies)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def post() -> None:
        client = stack.server.client(stack.token)
        barrier.wait()
        answer = client.post(url, json=body, headers={"Idempotency-Key": "race-7002"})
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=post) for _ in range(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [a.status_code for a in answers] == [201] * copies, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == copies - 1
    with stack.server.engine.connect() as conn:
        stored = conn.execute(
            sa.select(sa.func.count()).select_from(connections).where(
                connections.c.external_id == "7002"
            )
        ).scalar_one()
    assert stored == 1
