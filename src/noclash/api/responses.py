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
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.responses import Response

from noclash.api.problems import PROBLEM_BASE, PROBLEM_JSON, ProblemType

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"

# Where a response declared with :func:`problems` carries its problem types until
# :mod:`noclash.api.openapi` renders them into the response's schema (and removes it).
PROBLEM_TYPES = "x-noclash-problem-types"
PROBLEM_REF = "#/components/schemas/Problem"


class Problem(BaseModel):
    """An error answer (RFC 9457), as :mod:`noclash.api.errors` writes it: ``type``,
    ``title``, ``status``, ``detail``, and where they apply ``fields`` (the columns of a
    409, or ``{field, message, type}`` of a 422) and other members (``constraint``,
    ``conversation_id``...)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description=f"{PROBLEM_BASE} and the problem type (docs/api.md lists them); "
        "about:blank for a framework answer of a status with no type"
    )
    title: str
    status: int
    detail: str
    fields: list[Any] | None = None


def problems(*answers: int | ProblemType, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for what a route answers *itself*, beyond what every route of its kind
    answers (authentication, bodies, path ids, rate limits, idempotency, the database: all
    derived by :mod:`noclash.api.openapi` from the route). Each answer is a problem type
    (``ProblemType.CONFLICT``) or a bare status (every registered type of that status);
    each status is an ``application/problem+json`` :class:`Problem`, described by
    ``descriptions["s<status>"]`` when given, and by its types otherwise."""
    out: dict[int | str, dict[str, Any]] = {}
    for answer in answers:
        kinds = [answer] if isinstance(answer, ProblemType) else ProblemType.of_status(answer)
        status = answer.status if isinstance(answer, ProblemType) else answer
        response = out.setdefault(
            status,
            {
                "description": descriptions.get(f"s{status}", HTTPStatus(status).phrase),
                "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
                PROBLEM_TYPES: [],
            },
        )
        response[PROBLEM_TYPES] += [
            k.value for k in kinds if k.value not in response[PROBLEM_TYPES]
        ]
    return out


def link(method: str, path: str, description: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link from an answer to the operation ``method path``: how a client (or a
    fuzzer's stateful run) goes on from it, e.g. from a chatbot created to its widget with
    ``public_token="$response.body#/public_token"``. By ``operationRef`` (a JSON pointer
    into the document) so that no route needs an operationId."""
    pointer = quote(path.replace("~", "~0").replace("/", "~1"), safe="~")
    return {
        "operationRef": f"#/paths/{pointer}/{method.lower()}",
        "description": description,
        "parameters": parameters,
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


__all__ = [
    "JSON",
    "PROBLEM_JSON",
    "PROBLEM_REF",
    "PROBLEM_TYPES",
    "Problem",
    "Rendered",
    "link",
    "problems",
]
