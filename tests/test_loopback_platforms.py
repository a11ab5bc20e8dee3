"""The loopback platforms speak the documented formats (the outbound tests rely on them)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.support.platforms import (
    META_UNAVAILABLE,
    TELEGRAM_TOO_MANY,
    LoopbackMeta,
    LoopbackTelegram,
    running,
    wait_for,
)


def test_meta_owner_lookup_send_and_scripted_error():
    with running(LoopbackMeta()) as meta:
        meta.add_page("104871234567890", "page-token", instagram_id="17841400000000000")
        me = httpx.get(
            f"{meta.graph_url}/me",
            params={"fields": "id,instagram_business_account", "access_token": "page-token"},
        )
        assert me.json() == {
            "id": "104871234567890",
            "instagram_business_account": {"id": "17841400000000000"},
        }
        bad = httpx.get(f"{meta.graph_url}/me", params={"access_token": "nope"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == 190
        send = {
            "recipient": {"id": "6543210987654321"},
            "messaging_type": "RESPONSE",
            "message": {"text": "hi", "metadata": "d-1"},
        }
        ok = httpx.post(
            f"{meta.graph_url}/me/messages",
            json=send,
            headers={"Authorization": "Bearer page-token"},
        )
        assert ok.status_code == 200 and ok.json()["recipient_id"] == "6543210987654321"
        assert ok.json()["message_id"].startswith("m_")
        meta.fail_next(1, *META_UNAVAILABLE)
        refused = httpx.post(
            f"{meta.graph_url}/me/messages", json=send, params={"access_token": "page-token"}
        )
        assert refused.status_code == 400 and refused.json()["error"]["code"] == 551
        assert [m["text"] for m in meta.delivered()] == ["hi"]
        assert len(meta.sent) == 2


def test_meta_posts_signed_echoes_and_retries_until_acknowledged():
    bodies: list[tuple[bytes, str]] = []
    answers = iter([500, 200, 200])

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            bodies.append((raw, self.headers["X-Hub-Signature-256"]))
            self.send_response(next(answers, 200))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        with running(LoopbackMeta()) as meta:
            page = meta.add_page("1048", "tok")
            meta.echo_to(f"http://127.0.0.1:{hook.server_port}/", "app-secret")
            httpx.post(
                f"{meta.graph_url}/me/messages",
                params={"access_token": "tok"},
                json={
                    "recipient": {"id": "42"},
                    "messaging_type": "RESPONSE",
                    "message": {"text": "hello", "metadata": "delivery-1"},
                },
            )
            meta.page_inbox_send(page, "42", "typed in the Page inbox")
            assert wait_for(lambda: len(meta.echoes_sent) == 2)
    finally:
        hook.shutdown()
    assert len(bodies) == 3  # the first attempt got a 500 and was redelivered
    for raw, signature in bodies:
        expected = hmac.new(b"app-secret", raw, hashlib.sha256).hexdigest()
        assert signature == f"sha256={expected}"
    # Like Meta's, redelivery does not keep the order: tell the echoes apart by content.
    messages = {
        m["text"]: m
        for raw, _ in bodies[1:]
        for m in [json.loads(raw)["entry"][0]["messaging"][0]["message"]]
    }
    assert messages["hello"]["is_echo"] and messages["hello"]["metadata"] == "delivery-1"
    inbox = messages["typed in the Page inbox"]
    assert inbox["is_echo"] and "metadata" not in inbox and "app_id" not in inbox


def test_telegram_get_me_send_message_and_retry_after():
    with running(LoopbackTelegram()) as tg:
        bot = tg.add_bot(7000001)
        me = httpx.get(f"{tg.api_url}/bot{bot.token}/getMe").json()
        assert me["ok"] and me["result"]["id"] == 7000001 and me["result"]["is_bot"]
        assert httpx.get(f"{tg.api_url}/botwrong/getMe").status_code == 401
        tg.fail_next(1, *TELEGRAM_TOO_MANY)
        limited = httpx.post(
            f"{tg.api_url}/bot{bot.token}/sendMessage", json={"chat_id": 12345, "text": "hi"}
        )
        assert limited.status_code == 429
        assert limited.json()["parameters"]["retry_after"] == 1
        sent = httpx.post(
            f"{tg.api_url}/bot{bot.token}/sendMessage", json={"chat_id": 12345, "text": "hi"}
        ).json()
        assert sent["ok"] and sent["result"]["chat"]["id"] == 12345
        assert [m["text"] for m in tg.delivered()] == ["hi"]
