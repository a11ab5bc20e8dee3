"""Meta webhooks (Messenger, Instagram) through the real HTTP server with real signatures."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from noclash.channels.meta import sign
from noclash.db.tables import ACTIVE_STATUSES, conversations, messages
from tests.channels import META_SECRET, META_VERIFY_TOKEN, messenger_body, raw
from tests.support.server import LiveServer, start_live_server


@pytest.fixture
def server(database_url: str) -> Iterator[LiveServer]:
    with start_live_server(
        database_url, meta_app_secret=META_SECRET, meta_verify_token=META_VERIFY_TOKEN
    ) as live:
        yield live


def _connect(server: LiveServer, channel: str, external_id: str) -> str:
    client = server.client(server.user())
    bot = client.post("/api/chatbots", json={"name": "b"}).json()["id"]
    response = client.post(
        f"/api/chatbots/{bot}/connections", json={"channel": channel, "external_id": external_id}
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _post(client: httpx.Client, body: bytes, secret: str | None = META_SECRET, **headers):
    if secret is not None:
        headers.setdefault("X-Hub-Signature-256", sign(body, secret))
    return client.post(
        "/webhooks/meta", content=body, headers={"Content-Type": "application/json", **headers}
    )


def _counts(server: LiveServer) -> tuple[int, int]:
    with server.engine.connect() as conn:
        n_conv = conn.execute(sa.select(sa.func.count()).select_from(conversations)).scalar()
        n_msg = conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar()
    return n_conv, n_msg


def test_subscription_verification(server):
    client = server.client()
    params = {"hub.mode": "subscribe", "hub.verify_token": META_VERIFY_TOKEN,
              "hub.challenge": "1158201444"}  # fmt: skip
    ok = client.get("/webhooks/meta", params=params)
    assert ok.status_code == 200 and ok.text == "1158201444"
    bad = client.get("/webhooks/meta", params={**params, "hub.verify_token": "nope"})
    assert bad.status_code == 403
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_documented_messenger_message_is_stored_once(server):
    conn_id = _connect(server, "messenger", "PAGE_ID")
    client = server.client()
    body = raw("messenger_message")
    first = _post(client, body)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "stored": 1,
        "duplicates": 0,
        "ignored": 0,
        "unrouted": 0,
        "settled": 0,
        "invalid": 0,
    }
    again = _post(client, body)
    assert again.json() == {
        "stored": 0,
        "duplicates": 1,
        "ignored": 0,
        "unrouted": 0,
        "settled": 0,
        "invalid": 0,
    }
    with server.engine.connect() as conn:
        (conv,) = conn.execute(sa.select(conversations)).all()
        (msg,) = conn.execute(sa.select(messages)).all()
    assert str(conv.connection_id) == conn_id and conv.psid == "USER_ID"
    assert conv.status == "OPEN" and msg.text == "hello, world!"
    assert msg.platform_message_id == "mid.1457764197618:41d102a3e1ae206a38"


def test_instagram_routes_to_instagram_connection_only(server):
    # The same external id on Messenger must not receive Instagram events.
    messenger = _connect(server, "messenger", "IGID")
    instagram = _connect(server, "instagram", "IGID")
    response = _post(server.client(), raw("instagram_message"))
    assert response.json()["stored"] == 1
    with server.engine.connect() as conn:
        (conv,) = conn.execute(sa.select(conversations)).all()
    assert str(conv.connection_id) == instagram != messenger
    assert conv.psid == "IGSID"


def test_delivery_and_read_events_are_acknowledged(server):
    _connect(server, "messenger", "PAGE_ID")
    response = _post(server.client(), raw("messenger_delivery_read"))
    assert response.status_code == 200 and response.json()["stored"] == 0
    assert response.json()["ignored"] >= 1
    assert _counts(server) == (0, 0)


def test_an_echo_not_of_noclash_is_stored_once_as_outbound(server):
    """The documented echo (another app's metadata, not a delivery of ours): a message the
    customer received from the Page, stored once as outgoing; redeliveries store nothing.
    Echoes of noclash's own sends settle their delivery instead (tests/test_outbound.py)."""
    _connect(server, "messenger", "PAGE_ID")
    first = _post(server.client(), raw("messenger_echo"))
    assert first.status_code == 200 and first.json()["stored"] == 1
    again = _post(server.client(), raw("messenger_echo"))
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == 1
    with server.engine.connect() as conn:
        (message,) = conn.execute(sa.select(messages)).all()
        (conversation,) = conn.execute(sa.select(conversations)).all()
    assert (message.direction, message.text) == ("out", "hello, world!")
    assert conversation.psid == "USER_ID" and conversation.status == "OPEN"


def test_unknown_page_is_200_and_logged(server, caplog):
    _connect(server, "messenger", "PAGE_ID")
    body = raw("messenger_message", PAGE_ID="SOME_OTHER_PAGE")
    with caplog.at_level("WARNING", logger="noclash.webhooks"):
        response = _post(server.client(), body)
    assert response.status_code == 200 and response.json()["unrouted"] == 1
    assert "SOME_OTHER_PAGE" in caplog.text
    assert _counts(server) == (0, 0)


@pytest.mark.parametrize(
    "case", ["tampered body", "wrong secret", "missing header", "not sha256", "garbage"]
)
def test_bad_signatures_are_401_and_store_nothing(server, case):
    _connect(server, "messenger", "PAGE_ID")
    body = raw("messenger_message")
    client = server.client()
    if case == "tampered body":
        response = _post(
            client, body.replace(b"hello, world!", b"hello, w0rld!"),
            **{"X-Hub-Signature-256": sign(body, META_SECRET)},
        )  # fmt: skip
    elif case == "wrong secret":
        response = _post(client, body, secret="not-the-app-secret")
    elif case == "missing header":
        response = _post(client, body, secret=None)
    elif case == "not sha256":
        response = _post(client, body, **{"X-Hub-Signature-256": "sha1=" + "0" * 40})
    else:
        response = _post(client, body, **{"X-Hub-Signature-256": "sha256=zz"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert _counts(server) == (0, 0)


def test_well_signed_garbage_is_400_and_stores_nothing(server):
    _connect(server, "messenger", "PAGE_ID")
    client = server.client()
    assert _post(client, b"{not json").status_code == 400
    body = json.loads(raw("messenger_message"))
    good = body["entry"][0]["messaging"][0]
    broken = json.loads(json.dumps(good))
    del broken["message"]["mid"]
    body["entry"][0]["messaging"] = [good, broken]  # the valid first event is not stored
    response = _post(client, json.dumps(body).encode())
    assert response.status_code == 400
    assert _counts(server) == (0, 0)


def test_unconfigured_app_secret_is_refused(database_url):
    with start_live_server(database_url, meta_app_secret=None) as live:
        body = raw("messenger_message")
        response = _post(live.client(), body)
    assert response.status_code == 503


def test_64_concurrent_deliveries_for_one_customer(server):
    """64 signed deliveries at a barrier, a third of them the same mid redelivered."""
    conn_id = _connect(server, "messenger", "PAGE-64")
    n = 64
    bodies = [
        messenger_body(
            "PAGE-64", "PSID-64", "mid.redelivered" if i % 3 == 0 else f"mid.{i}",
            f"message {i}", 1_700_000_000_000 + i,
        )
        for i in range(n)
    ]  # fmt: skip
    distinct = {json.loads(b)["entry"][0]["messaging"][0]["message"]["mid"] for b in bodies}
    barrier = threading.Barrier(n)
    client = server.client(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))

    def deliver(body: bytes) -> httpx.Response:
        barrier.wait()
        return _post(client, body)

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(deliver, bodies))
    assert [r.status_code for r in responses] == [200] * n, [r.text for r in responses]
    assert sum(r.json()["stored"] for r in responses) == len(distinct)
    with server.engine.connect() as conn:
        convs = conn.execute(sa.select(conversations)).all()
        stored = conn.execute(sa.select(messages.c.platform_message_id)).scalars().all()
    assert len(convs) == 1 and convs[0].status in ACTIVE_STATUSES
    assert str(convs[0].connection_id) == conn_id
    assert sorted(stored) == sorted(distinct)
    # last_message_at is the newest sent timestamp, whatever the arrival order.
    assert convs[0].last_message_at.timestamp() == pytest.approx(1_700_000_000.063)


@pytest.mark.parametrize("bad", ["NUL in mid", "long customer id", "NUL in page id"])
def test_an_echo_that_can_never_be_stored_is_acknowledged_as_invalid(server, bad, caplog):
    """An echo's ids are checked as an event's are: one PostgreSQL cannot store (a NUL, an
    id over its column) is acknowledged and logged, not a 4xx that Meta would redeliver
    forever; and both databases answer alike."""
    _connect(server, "messenger", "PAGE_ID")
    body = json.loads(raw("messenger_echo"))
    event = body["entry"][0]["messaging"][0]
    if bad == "NUL in mid":
        event["message"]["mid"] = "m_\u0000echo"
    elif bad == "long customer id":
        event["recipient"]["id"] = "9" * 201
    else:
        event["sender"]["id"] = body["entry"][0]["id"] = "PAGE\u0000ID"
    with caplog.at_level("WARNING", logger="noclash.webhooks"):
        answer = _post(server.client(), json.dumps(body).encode())
    assert answer.status_code == 200, answer.text
    assert (answer.json()["stored"], answer.json()["invalid"]) == (0, 1)
    assert "refused" in caplog.text
    assert _counts(server) == (0, 0)


@pytest.mark.parametrize("bad", ["long sender", "NUL in mid"])
def test_a_batch_is_checked_whole_before_anything_is_stored(server, bad, caplog):
    """A valid event and one that can never be stored (a 201-character sender id, a NUL in
    its mid): the valid one is stored, the other acknowledged as invalid and logged naming
    its field, and a redelivery of the body stores nothing more. A 4xx would make Meta
    redeliver the whole body, the valid event too, forever."""
    _connect(server, "messenger", "PAGE_ID")
    body = json.loads(messenger_body("PAGE_ID", "good-customer", "m_good", "hello", 1764064800000))
    second = json.loads(json.dumps(body["entry"][0]["messaging"][0]))
    if bad == "long sender":
        second["sender"]["id"] = "9" * 201
        second["message"]["mid"] = "m_bad"
    else:
        second["message"]["mid"] = "m_\u0000bad"
    body["entry"][0]["messaging"].append(second)
    raw_body = json.dumps(body).encode()
    with caplog.at_level("WARNING", logger="noclash.webhooks"):
        first = _post(server.client(), raw_body)
    assert first.status_code == 200, first.text
    assert (first.json()["stored"], first.json()["invalid"]) == (1, 1)
    assert ("psid" if bad == "long sender" else "message_id") in caplog.text
    again = _post(server.client(), raw_body)
    assert (again.json()["stored"], again.json()["duplicates"], again.json()["invalid"]) == (
        0,
        1,
        1,
    )
    assert _counts(server) == (1, 1)
