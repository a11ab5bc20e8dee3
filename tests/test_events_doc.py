"""The verification code in docs/events.md works, as it is written there.

The ``python`` block under "Verifying a webhook" is taken from the document and run, on
its own (no noclash import), against a real delivery: an event a real dispatcher signed
and sent to a loopback bot, on SQLite and PostgreSQL. It accepts that request and refuses
it tampered with in each part: the body, the signature, the secret, the timestamp. The
example bot carries the same function, word for word.
"""

from __future__ import annotations

import pathlib
import re
import time
from typing import Any

from tests.support.bots import LoopbackBot
from tests.support.outbound import outbound_stack
from tests.support.platforms import running, wait_for

ROOT = pathlib.Path(__file__).parents[1]
DOC = ROOT / "docs" / "events.md"
BOT = ROOT / "examples" / "echo_bot.py"


def _documented_code() -> str:
    text = DOC.read_text()
    section = text.split("\n## Verifying a webhook\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "one python block in 'Verifying a webhook'"
    return blocks[0]


def _documented_verify() -> Any:
    namespace: dict[str, Any] = {"__name__": "docs_events"}
    exec(compile(_documented_code(), str(DOC), "exec"), namespace)
    return namespace["verify"]


def test_the_documented_code_needs_nothing_but_the_standard_library():
    imports = re.findall(r"^(?:import|from) (\w+)", _documented_code(), flags=re.MULTILINE)
    assert imports and set(imports) <= {"hashlib", "hmac", "time"}


def test_the_example_bot_verifies_with_the_documented_function():
    function = _documented_code().split("\n\n\n", 1)[1]
    assert function.startswith("def verify(")
    assert function in BOT.read_text()


def test_the_documented_verification_on_a_real_delivery(database_url):
    verify = _documented_verify()
    with running(LoopbackBot()) as bot, outbound_stack(database_url) as stack:
        chatbot = stack.chatbot(webhook_url=bot.url)
        secret = stack.api.post(f"/api/chatbots/{chatbot['id']}/webhook-secret").json()[
            "webhook_secret"
        ]
        custom = stack.api.post(
            f"/api/chatbots/{chatbot['id']}/connections",
            json={"channel": "custom", "external_id": "sms"},
        ).json()
        stack.api.post(
            f"/api/connections/{custom['id']}/inbound",
            json={"psid": "+15550100", "message_id": "sms-1", "text": "verify me"},
        )
        assert wait_for(lambda: len(bot.requests) >= 2, timeout=15)
    request = bot.requests[-1]
    body, header = request.body, request.headers["noclash-signature"]
    assert b"verify me" in body

    assert verify(body, header, secret) is True
    # Tampered: one byte of the body, the signature, the secret, a stale timestamp.
    assert verify(body.replace(b"verify me", b"verify m3"), header, secret) is False
    assert verify(body + b" ", header, secret) is False
    digit = header[-1]
    assert verify(body, header[:-1] + ("0" if digit != "0" else "1"), secret) is False
    assert verify(body, header, secret + "x") is False
    stamp = int(header.split(",")[0].removeprefix("t="))
    assert verify(body, header, secret, now=stamp + 301) is False
    assert verify(body, header, secret, now=stamp + 299) is True
    # Not a timestamp: refused, never raised (a 400-digit one overflowed the clock's float).
    signature = header.split(",", 1)[1]
    for t in ("9" * 400, f"+{stamp}", f" {stamp}", f"{stamp}.0", "١٢٣"):
        assert verify(body, f"t={t},{signature}", secret) is False
    # A signature moved to another time is not valid for it.
    moved = header.replace(f"t={stamp}", f"t={int(time.time()) + 1}")
    assert verify(body, moved, secret) is False
    # Malformed headers are refusals, not exceptions.
    for wrong in ("", "t=1", "v1=abc", "garbage", "t=x,v1=y", f"t={stamp},v1=é"):
        assert verify(body, wrong, secret) is False
