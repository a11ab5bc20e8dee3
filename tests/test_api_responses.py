"""The hot create routes return a pre-rendered response; the contract must not move.

They return a ready ``Response`` (``noclash.api.responses.Rendered``) instead of a dict
under ``response_model``, which FastAPI then sends without looking at the model. These
tests pin what that must not change: the OpenAPI document still describes each 201 body
with its model, and the rendered bytes are exactly what FastAPI's own serialisation of
the model gives.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pydantic import TypeAdapter, ValidationError

from noclash.api.app import create_app
from noclash.api.responses import Rendered
from noclash.api.routes.chatbots import CHATBOT_OUT, ChatbotOut
from noclash.config import Settings

HOT_CREATES = {
    "/api/chatbots": "ChatbotOut",
    "/api/chatbots/{chatbot_id}/connections": "ConnectionOut",
    "/api/chatbots/{chatbot_id}/conversations": "ConversationOut",
    "/api/conversations/{conversation_id}/messages": "MessageOut",
    "/api/widget/{public_token}/sessions": "SessionOut",
}


def _row(**overrides: object) -> SimpleNamespace:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "owner_id": uuid.uuid4(),
        "name": "Support bot",
        "public_token": uuid.uuid4(),
        "require_auth": False,
        "slack_channel_id": "C0123",
        "asana_project_id": None,
        "allowed_origins": None,
        "created_at": datetime(2026, 11, 25, 9, 25, 42, 31350, tzinfo=UTC),
        "webhook_url": None,
        "webhook_events": None,
        "has_webhook_secret": False,
    }
    values.update(overrides)
    return SimpleNamespace(**values)


def test_the_openapi_document_still_names_each_response_model(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    paths = app.openapi()["paths"]
    for path, model in HOT_CREATES.items():
        created = paths[path]["post"]["responses"]["201"]
        schema = created["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}, path


def test_rendered_bytes_are_fastapis_serialisation_of_the_model():
    row = _row()
    expected = TypeAdapter(ChatbotOut).dump_json(
        ChatbotOut.model_validate(row, from_attributes=True), by_alias=True
    )
    assert CHATBOT_OUT.body(row) == expected
    response = CHATBOT_OUT.response(row)
    assert response.status_code == 201
    assert response.media_type == "application/json"
    assert response.body == expected
    assert expected.startswith(b'{"id":"')
    assert expected.endswith(
        b'"created_at":"2026-11-25T09:25:42.031350Z","webhook_url":null,"webhook_events":null,'
        b'"has_webhook_secret":false}'
    )


def test_a_value_that_does_not_fit_the_model_is_an_error_not_a_wrong_body():
    """As with response_model: a row that does not validate fails (a 500 problem)."""
    with pytest.raises(ValidationError):
        Rendered(ChatbotOut).body(_row(public_token="not-a-uuid"))
