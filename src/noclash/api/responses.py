"""Responses rendered once, for the hot create routes.

Why: a route that returns a dict under ``response_model=X`` has FastAPI validate the dict
against ``X`` and then serialise it, and for a synchronous route that validation runs in
a second thread-pool hop after the endpoint's own. On a small machine that hop is a
measurable part of a create's CPU (``docs/performance.md``). A hot route therefore does
its database work *and* this rendering in the one worker thread it needs anyway, and
returns a ready :class:`~starlette.responses.Response`, which FastAPI sends as is.

The route keeps ``response_model=X`` so that the OpenAPI document still describes the
body; :class:`Rendered` validates with the same model (in pydantic's core, from the row's
attributes) and serialises it the way FastAPI's own fast path does
(``TypeAdapter.dump_json`` with aliases), so the bytes on the wire are unchanged, and a
value that does not fit the model is still an error (a 500 problem), never a wrong body.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter
from starlette.responses import Response

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"


class Rendered(Generic[M]):
    """Validate an object (a row, a dict) as ``model`` and answer it as JSON bytes."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self._adapter: TypeAdapter[M] = TypeAdapter(model)

    def body(self, data: Any) -> bytes:
        value = self._adapter.validate_python(data, from_attributes=True)
        return self._adapter.dump_json(value, by_alias=True)

    def response(self, data: Any, status_code: int = 201) -> Response:
        return Response(self.body(data), status_code=status_code, media_type=JSON)


__all__ = ["JSON", "Rendered"]
