"""Responses rendered once, in the worker thread that did the database work.

Why: a route that returns a dict under ``response_model=X`` has FastAPI validate the dict
against ``X`` and then serialise it, and for a synchronous route that validation runs in
a second thread-pool hop after the endpoint's own. On a small machine that hop is a
measurable part of a create's CPU (``docs/performance.md``). Every route therefore does
its database work *and* this rendering in the one worker-thread call it needs anyway
(:mod:`noclash.api.work`), and returns a ready :class:`~starlette.responses.Response`,
which FastAPI sends as is.

The route keeps ``response_model=X`` so that the OpenAPI document still describes the
body; :class:`Rendered` validates with the same model (in pydantic's core, from the row's
attributes) and serialises it the way FastAPI's own fast path does
(``TypeAdapter.dump_json`` with aliases), so the bytes on the wire are unchanged, and a
value that does not fit the model is still an error (a 500 problem), never a wrong body.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter
from starlette.responses import Response

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """An error answer (RFC 9457), as :mod:`noclash.api.errors` writes it: ``type``,
    ``title``, ``status``, ``detail``, and where they apply ``fields`` (the columns of a
    409, or ``{field, message, type}`` of a 422) and other members (``constraint``,
    ``conversation_id``...)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    fields: list[Any] | None = None


_PROBLEM_SCHEMA = Problem.model_json_schema()


def problems(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status as an ``application/problem+json``
    :class:`Problem`, described by its phrase or by ``descriptions["s<status>"]``."""
    return {
        status: {
            "description": descriptions.get(f"s{status}", HTTPStatus(status).phrase),
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


class Rendered(Generic[M]):
    """Validate an object (a row, a dict) as ``model`` and answer it as JSON bytes.

    Calling it renders with its ``status_code``; :meth:`response` takes another one for
    routes whose status depends on the outcome (200 for a duplicate, 201 when stored).
    """

    def __init__(self, model: type[M], status_code: int = 201) -> None:
        self.model = model
        self.status_code = status_code
        self._adapter: TypeAdapter[M] = TypeAdapter(model)

    def body(self, data: Any) -> bytes:
        value = self._adapter.validate_python(data, from_attributes=True)
        return self._adapter.dump_json(value, by_alias=True)

    def response(self, data: Any, status_code: int | None = None) -> Response:
        status = self.status_code if status_code is None else status_code
        return Response(self.body(data), status_code=status, media_type=JSON)

    def __call__(self, data: Any) -> Response:
        return Response(self.body(data), status_code=self.status_code, media_type=JSON)


__all__ = ["JSON", "PROBLEM_JSON", "Problem", "Rendered", "problems"]
