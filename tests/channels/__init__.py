"""Webhook payloads as the platforms document them, and helpers to send them.

The JSON files are the documented examples (Meta's Messenger and Instagram webhook
references, Telegram's "Testing your bot with updates"), placeholders included
(``PAGE_ID``, ``USER_ID``, ``IGID``, ``IGSID``). :func:`payload` substitutes the
placeholders textually, so the body a test signs and sends is still the documented shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
META_SECRET = "test-app-secret"
META_VERIFY_TOKEN = "test-verify-token"


def raw(name: str, **placeholders: str) -> bytes:
    """The fixture ``name`` (without .json) with each placeholder replaced, as bytes."""
    text = (HERE / f"{name}.json").read_text()
    for key, value in placeholders.items():
        text = text.replace(key, value)
    return text.encode()


def payload(name: str, **placeholders: str) -> Any:
    return json.loads(raw(name, **placeholders))


def messenger_body(page_id: str, psid: str, mid: str, text: str, timestamp: int) -> bytes:
    """One Messenger message event in the documented envelope, as compact bytes."""
    body = payload("messenger_message", PAGE_ID=page_id, USER_ID=psid)
    event = body["entry"][0]["messaging"][0]
    event["message"].update(mid=mid, text=text)
    event["timestamp"] = timestamp
    return json.dumps(body).encode()
