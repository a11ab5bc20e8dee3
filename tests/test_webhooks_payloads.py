"""Channel adapters as pure functions, on the platforms' documented examples (no server)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from noclash.channels import PayloadError, meta, telegram
from tests.channels import META_SECRET, META_VERIFY_TOKEN, payload, raw


def test_messenger_documented_message():
    batch = meta.parse(payload("messenger_message"))
    assert batch.channel == "messenger" and batch.ignored == 0
    (event,) = batch.events
    assert event.recipient_id == "PAGE_ID" and event.psid == "USER_ID"
    assert event.platform_message_id == "mid.1457764197618:41d102a3e1ae206a38"
    assert event.text == "hello, world!"
    assert event.sent_at == datetime.fromtimestamp(1458692752.478, tz=UTC)


def test_instagram_documented_message():
    batch = meta.parse(payload("instagram_message"))
    assert batch.channel == "instagram"
    (event,) = batch.events
    assert (event.recipient_id, event.psid, event.platform_message_id, event.text) == (
        "IGID", "IGSID", "MESSAGE-ID", "MESSAGE-TEXT",
    )  # fmt: skip


def test_delivery_and_read_events_are_ignored():
    batch = meta.parse(payload("messenger_delivery_read"))
    assert batch.events == [] and batch.echoes == () and batch.ignored >= 1


def test_an_echo_is_parsed_as_an_echo_not_a_customer_message():
    batch = meta.parse(payload("messenger_echo", PAGE_ID="104871234567890", USER_ID="654321"))
    assert batch.events == [] and batch.ignored == 0
    (echo,) = batch.echoes
    assert (echo.page_id, echo.psid, echo.text) == ("104871234567890", "654321", "hello, world!")
    assert echo.mid == "mid.1457764197618:41d102a3e1ae206a38"
    assert echo.metadata == "DEVELOPER_DEFINED_METADATA_STRING"
    assert echo.app_id == "1517776481860111"


def test_an_object_that_is_not_a_string_is_acknowledged_not_a_crash():
    batch = meta.parse({"object": {}, "entry": []})
    assert batch.channel is None and batch.events == []


def test_attachment_only_message_gets_a_placeholder_text():
    body = payload("messenger_message")
    message = body["entry"][0]["messaging"][0]["message"]
    del message["text"]
    message["attachments"] = [{"type": "image", "payload": {"url": "https://x/y.png"}}]
    (event,) = meta.parse(body).events
    assert event.text == "[attachment: image]"


def test_other_meta_objects_are_acknowledged_not_parsed():
    body = payload("messenger_message")
    body["object"] = "whatsapp_business_account"
    batch = meta.parse(body)
    assert batch.channel is None and batch.events == []


@pytest.mark.parametrize("kind", [[], {}, 5, None])
def test_an_object_that_is_no_string_is_acknowledged_not_a_500(kind):
    """A list or an object as ``object`` was looked up as a dict key, a TypeError: a body
    with a good signature answered 500."""
    body = payload("messenger_message")
    body["object"] = kind
    batch = meta.parse(body)
    assert batch.channel is None and batch.events == [] and batch.ignored == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("entry"),
        lambda b: b["entry"][0].update(messaging="nope"),
        lambda b: b["entry"][0]["messaging"][0]["message"].pop("mid"),
        lambda b: b["entry"][0]["messaging"][0].pop("sender"),
    ],
)
def test_malformed_meta_bodies_raise(mutate):
    body = payload("messenger_message")
    mutate(body)
    with pytest.raises(PayloadError):
        meta.parse(body)


def test_meta_signature_is_hmac_sha256_of_raw_body():
    body = raw("messenger_message")
    header = meta.sign(body, META_SECRET)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert meta.verify_signature(body, header, META_SECRET)
    assert not meta.verify_signature(body + b" ", header, META_SECRET)  # tampered body
    assert not meta.verify_signature(body, meta.sign(body, "other"), META_SECRET)
    assert not meta.verify_signature(body, None, META_SECRET)
    assert not meta.verify_signature(body, header.replace("sha256=", "sha1="), META_SECRET)
    assert not meta.verify_signature(body, "sha256=é", META_SECRET)


def test_meta_subscription_verification():
    params = {"hub.mode": "subscribe", "hub.verify_token": META_VERIFY_TOKEN,
              "hub.challenge": "1158201444"}  # fmt: skip
    assert meta.verify_subscription(params, META_VERIFY_TOKEN) == "1158201444"
    assert meta.verify_subscription({**params, "hub.verify_token": "x"}, META_VERIFY_TOKEN) is None
    assert meta.verify_subscription({**params, "hub.mode": "x"}, META_VERIFY_TOKEN) is None
    assert meta.verify_subscription(params, None) is None


def test_telegram_documented_update():
    event = telegram.parse(payload("telegram_message"))
    assert event is not None
    assert (event.psid, event.platform_message_id, event.text, event.username) == (
        "1111111", "1111111:1365", "/start", "Test",
    )  # fmt: skip
    assert event.sent_at == datetime.fromtimestamp(1441645532, tz=UTC)


@pytest.mark.parametrize("date", [10**20, -(10**13), 2**63, "yesterday", True, 1.5])
def test_a_telegram_date_with_no_time_is_ignored_not_a_500(date):
    """A date out of range for the calendar or for time_t was an OverflowError or a
    ValueError in ``datetime.fromtimestamp``: a 500 for an update with the right secret."""
    body = payload("telegram_message")
    body["message"]["date"] = date
    event = telegram.parse(body)
    assert event is not None and event.sent_at is None and event.text == "/start"


def test_an_integral_number_is_an_integer_whatever_its_spelling():
    """Found by the fuzzer: JSON Schema (the document) calls -493.0 an integer, the parser
    refused it (a float) with a 400; both now read the same JSON number."""
    body = payload("telegram_message")
    body["update_id"], body["message"]["chat"]["id"] = -493.0, 1111111.0
    body["message"]["message_id"] = 1365.0
    event = telegram.parse(body)
    assert event is not None
    assert (event.platform_message_id, event.psid) == ("1111111:1365", "1111111")
    with pytest.raises(PayloadError):
        telegram.parse({**body, "update_id": 1.5})
    with pytest.raises(PayloadError):
        telegram.parse({**body, "update_id": True})
    meta_body = payload("messenger_message")
    meta_body["entry"][0]["messaging"][0]["sender"] = {"id": 42.0}
    assert meta.parse(meta_body).events[0].psid == "42"


def test_telegram_other_updates_are_ignored():
    assert telegram.parse(payload("telegram_edited_message")) is None


@pytest.mark.parametrize("body", [[], {"message": {}}, {"update_id": "1"},
                                  {"update_id": 1, "message": {"chat": {}}}])  # fmt: skip
def test_malformed_telegram_updates_raise(body):
    with pytest.raises(PayloadError):
        telegram.parse(body)


def test_telegram_secret_is_compared_exactly():
    assert telegram.verify_secret("s3cret", "s3cret")
    assert not telegram.verify_secret("s3cret ", "s3cret")
    assert not telegram.verify_secret(None, "s3cret")
    assert not telegram.verify_secret("s3cret", None)
