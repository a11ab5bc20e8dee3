"""The OpenAPI document is complete, and it is so by construction (``api/openapi.py``).

These tests pin the rules that derive each operation's answers from the route itself, so a
route added tomorrow is described without anyone listing its statuses; ``tests/test_fuzz.py``
checks the live server against the result.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, Request
from pydantic import Field

from noclash.api.app import create_app
from noclash.api.deps import CurrentUser
from noclash.api.openapi import BEYOND_OPERATIONS
from noclash.api.problems import PROBLEM_JSON, ProblemType
from noclash.api.responses import PROBLEM_REF, problems
from noclash.api.schemas import StrictModel
from noclash.config import Settings

PROBLEM = {"$ref": PROBLEM_REF}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("openapi") / "x.db"
    return create_app(Settings(database_url=f"sqlite:///{path}")).openapi()


def _operations(document: dict[str, Any]):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation


def _types(response: dict[str, Any]) -> set[str]:
    schema = response["content"][PROBLEM_JSON]["schema"]
    assert schema["allOf"][0] == PROBLEM
    return {uri.rsplit("/", 1)[1] for uri in schema["allOf"][1]["properties"]["type"]["enum"]}


def test_every_error_answer_is_a_problem_of_its_operations_types(document):
    for method, path, operation in _operations(document):
        for code, response in operation["responses"].items():
            if int(code) < 400:
                continue
            assert list(response["content"]) == [PROBLEM_JSON], (method, path, code)
            kinds = _types(response)
            assert kinds, (method, path, code)
            assert all(ProblemType(k).status == int(code) for k in kinds), (method, path, code)
            assert "x-noclash-problem-types" not in response
    assert "HTTPValidationError" not in str(document)
    assert document["components"]["schemas"]["Problem"]["additionalProperties"] is True


def test_every_operation_answers_what_every_route_can(document):
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        # The database (or the server's connection limit), and a NUL in any parameter.
        assert "unavailable" in _types(responses["503"]), (method, path)
        assert "invalid-input" in _types(responses["422"]), (method, path)
        if "requestBody" in operation:
            assert {"400", "413"} <= responses.keys(), (method, path)
        if "{" in path:
            assert "not-found" in _types(responses["404"]), (method, path)
        if "401" in responses:
            # Wrong tokens are counted; past the limit a 401 becomes a 429.
            assert "rate-limited" in _types(responses["429"]), (method, path)
            assert responses["429"]["headers"]["Retry-After"]["required"] is True


def test_security_follows_the_auth_dependency(document):
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert bearer == {**bearer, "type": "http", "scheme": "bearer"}
    security = {(m, p): op.get("security") for m, p, op in _operations(document)}
    assert security["GET", "/api/chatbots"] == [{"bearer": []}]
    assert security["GET", "/api/users"] == [{"bearer": []}]
    # A widget or a public view serves anonymous callers; a token, if sent, must be valid.
    assert security["POST", "/api/widget/{public_token}/sessions"] == [{}, {"bearer": []}]
    assert security["GET", "/api/public/chatbots/{public_token}"] == [{}, {"bearer": []}]
    for open_route in [("GET", "/healthz"), ("POST", "/webhooks/meta"), ("GET", "/readyz")]:
        assert security[open_route] is None
    for (method, path), declared in security.items():
        responses = document["paths"][path][method.lower()]["responses"]
        if declared:
            assert "unauthenticated" in _types(responses["401"]), (method, path)
    admin = document["paths"]["/api/users"]["get"]["responses"]
    assert "forbidden" in _types(admin["403"])


def test_creates_take_an_idempotency_key_and_say_when_an_answer_is_replayed(document):
    create = document["paths"]["/api/chatbots"]["post"]
    (key,) = [p for p in create["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header" and key["required"] is False
    assert "Idempotent-Replayed" in create["responses"]["201"]["headers"]
    assert {"invalid-idempotency-key"} <= _types(create["responses"]["400"])
    assert {"idempotency-key-in-progress"} <= _types(create["responses"]["409"])
    assert {"idempotency-key-reused"} <= _types(create["responses"]["422"])
    users = document["paths"]["/api/users"]["post"]
    assert all(p["name"] != "Idempotency-Key" for p in users.get("parameters", []))
    assert _types(users["responses"]["400"]) >= {"invalid-idempotency-key"}
    assert "idempotency-key-reused" not in _types(users["responses"]["422"])


def test_webhooks_are_described_as_the_platforms_send_them(document):
    verify = document["paths"]["/webhooks/meta"]["get"]
    assert list(verify["responses"]["200"]["content"]) == ["text/plain"]
    assert {p["name"] for p in verify["parameters"]} == {
        "hub.mode",
        "hub.verify_token",
        "hub.challenge",
    }
    assert _types(verify["responses"]["403"]) == {"verification-failed"}
    meta = document["paths"]["/webhooks/meta"]["post"]
    body = meta["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["object", "entry"] and body["additionalProperties"] is True
    assert {"bad-signature"} <= _types(meta["responses"]["401"])
    assert {"not-configured", "unavailable"} <= _types(meta["responses"]["503"])
    assert {"malformed-payload", "malformed-json"} <= _types(meta["responses"]["400"])
    telegram = document["paths"]["/webhooks/telegram/{connection_id}"]["post"]
    schema = telegram["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["update_id"] and schema["additionalProperties"] is True
    assert "X-Telegram-Bot-Api-Secret-Token" in {p["name"] for p in telegram["parameters"]}
    receipt = telegram["responses"]["200"]["content"]["application/json"]["schema"]
    assert receipt == {"$ref": "#/components/schemas/TelegramReceipt"}


class ThingIn(StrictModel):
    name: str = Field(min_length=1)


things = APIRouter(prefix="/api/things")


@things.post("/{thing_id}/poke", status_code=201, responses=problems(ProblemType.CONFLICT))
async def poke(request: Request, thing_id: str, body: ThingIn, user: CurrentUser) -> None:
    """A route as another engineer would add it: its own answer (409 conflict), no more."""


def test_a_new_route_is_described_with_no_more_than_its_own_answers(tmp_path):
    """What a new route gets by merely being included in the app."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    app.include_router(things)
    operation = app.openapi()["paths"]["/api/things/{thing_id}/poke"]["post"]
    responses = operation["responses"]
    assert operation["security"] == [{"bearer": []}]
    assert sorted(responses) == ["201", "400", "401", "404", "409", "413", "422", "429", "503"]
    assert _types(responses["409"]) == {"conflict", "idempotency-key-in-progress"}
    assert "Idempotency-Key" in {p["name"] for p in operation["parameters"]}
    name = app.openapi()["components"]["schemas"]["ThingIn"]["properties"]["name"]
    assert "\\x00" in name["pattern"]  # the text rules are published too


def test_what_no_operation_answers_is_said_once(document):
    description = document["info"]["description"]
    for kind, _why in BEYOND_OPERATIONS:
        assert f"{kind.status} `{kind.value}`" in description


def test_every_problem_type_is_in_the_document(document):
    """A type the code can answer but the document never names is a hole in the contract."""
    named = {kind.value for kind, _why in BEYOND_OPERATIONS}
    for _method, _path, operation in _operations(document):
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                named |= _types(response)
    assert {k.value for k in ProblemType} - named == set()
