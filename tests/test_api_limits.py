"""Body limits: a body nested deeper than any parser should accept is a 400 before any
route, hash or webhook adapter parses it; the depth scanner is linear on any input."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import sqlalchemy as sa

from noclash.api.limits import MAX_JSON_DEPTH, json_depth, nests_deeper_than
from noclash.channels import meta
from noclash.db.tables import chatbots, idempotency_keys
from tests.support.server import start_live_server

PROBLEM = "application/problem+json"
DEEP = b"[" * 1000 + b"]" * 1000


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'"[[[[[[" ', 0),  # brackets inside a string do not nest
        (b'["\\"[[[", [[]]]', 3),  # nor after an escaped quote inside it
        (b'["\\\\", [[]]]', 3),  # an escaped backslash ends before the quote
        (b'"unterminated [[[[', 0),
        (_nested(64), 64),
        (DEEP, 1000),
    ],
)
def test_json_depth(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth
    assert nests_deeper_than(body, MAX_JSON_DEPTH) is (depth > MAX_JSON_DEPTH)


def test_json_depth_is_linear_on_hostile_input() -> None:
    """Quotes and backslashes arranged to make a naive string matcher rescan the rest of
    the body at every quote: 64 KiB of them still take milliseconds."""
    for hostile in (b'"\\' * 32768, b'\\"' * 32768, b"[" * 65536, b'["' * 32768):
        started = time.perf_counter()
        json_depth(hostile)
        assert time.perf_counter() - started < 0.5, hostile[:8]


def test_a_deep_body_is_a_400_everywhere_and_the_server_keeps_serving(database_url) -> None:
    secret = "meta-app-secret"
    with start_live_server(database_url, meta_app_secret=secret) as server:
        token = server.user()
        client = server.client(token)
        json_type = {"content-type": "application/json"}
        telegram = client.post(
            f"/api/chatbots/{client.post('/api/chatbots', json={'name': 'b'}).json()['id']}"
            "/connections",
            json={"channel": "telegram", "external_id": "bot-1", "secret": "tg"},
        ).json()
        answers = {
            "keyed create": client.post(
                "/api/chatbots",
                content=DEEP,
                headers=json_type | {"Idempotency-Key": str(uuid.uuid4())},
            ),
            "create": client.post("/api/chatbots", content=DEEP, headers=json_type),
            "create, no content type": client.post("/api/chatbots", content=DEEP),
            "create, chunked": client.post(
                "/api/chatbots", content=iter([DEEP[:1500], DEEP[1500:]]), headers=json_type
            ),
            "meta webhook": client.post(
                "/webhooks/meta",
                content=DEEP,
                headers=json_type | {meta.SIGNATURE_HEADER: meta.sign(DEEP, secret)},
            ),
            "telegram webhook": client.post(
                f"/webhooks/telegram/{telegram['id']}",
                content=DEEP,
                headers=json_type | {"X-Telegram-Bot-Api-Secret-Token": "tg"},
            ),
        }
        for what, r in answers.items():
            assert r.status_code == 400, (what, r.status_code, r.text[:200])
            assert r.headers["content-type"] == PROBLEM, what
            assert r.json()["type"].endswith("/malformed-json"), what
        # At the bound, a body is handed on (and the schema refuses the unknown field).
        at_bound = json.dumps({"name": "x", "extra": json.loads(_nested(63))})
        assert client.post("/api/chatbots", content=at_bound, headers=json_type).status_code == 422
        assert client.post("/api/chatbots", json={"name": "after"}).status_code == 201
        with server.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(chatbots)).scalar() == 2
            keys = conn.execute(sa.select(sa.func.count()).select_from(idempotency_keys))
            assert keys.scalar() == 0
