"""The OpenAPI document, complete: every answer of every route, described from one place.

Why here and not in each route's ``responses=``: most of what a route can answer is not
the route's doing. The authentication dependency answers 401 (and 403 for an
administrator's route), the body limits 413 and 400, the framework 422, the rate limiter
429, the idempotency middleware 400, 409 and 422 on every create, the database 503
anywhere. Repeated by hand on every route, such lists drift (they had: most routes
documented 200 and 422 only). So FastAPI's document is completed here, once, from what
each route *is*:

======================================  ===================================================
the route has                           it can also answer
======================================  ===================================================
anything (every route)                  503 ``unavailable`` (the database, the pool, or
                                        the server's connection limit); 422
                                        ``invalid-input`` (a NUL in any query or path
                                        parameter: an app-wide dependency)
``CurrentUser`` / ``AdminUser``         401 ``unauthenticated``; bearer security required
``OptionalUser``                        401 ``unauthenticated`` (a wrong token is never
                                        anonymous); bearer security optional
``AdminUser``                           403 ``forbidden``
a 401 of any kind                       429 ``rate-limited`` (wrong tokens are counted)
a request body                          400 ``malformed-json`` (nesting), 413
a body FastAPI parses                   400 ``bad-request``, 422 ``invalid-input``
a path parameter                        404 ``not-found``
a rate limited path                     429 ``rate-limited``
a path of the widget's API              403 ``origin-not-allowed`` (noclash.api.cors)
a create (``POST /api/...``, 201)       the ``Idempotency-Key`` header and its answers
======================================  ===================================================

A route adds only what it answers itself, with ``responses=problems(...)``
(:func:`noclash.api.responses.problems`). Every error answer is then the
``application/problem+json`` ``Problem`` schema, with the problem types the operation can
answer for that status as an ``enum`` (from :mod:`noclash.api.problems`), so a fuzzer can
tell a documented answer from an undocumented one; FastAPI's ``HTTPValidationError`` is
gone. ``tests/test_openapi.py`` pins these rules and ``tests/test_fuzz.py`` checks the
live server against the document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from noclash.api.deps import admin_user, current_user, optional_user
from noclash.api.idempotency import HEADER, REPLAYABLE, REPLAYED, creates
from noclash.api.problems import PROBLEM_BASE, PROBLEM_JSON, ProblemType
from noclash.api.ratelimit import LIMITED_ROUTES
from noclash.api.responses import PROBLEM_REF, PROBLEM_TYPES, Problem
from noclash.api.schemas import NO_NUL, no_nul_parameters
from noclash.unique.idempotency import MAX_KEY_LENGTH

BEARER = "bearer"
SECURITY_SCHEMES = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`noclash user create`, or `POST /api/users` as an "
        "administrator): `Authorization: Bearer <token>`.",
    }
}
_REQUIRED = frozenset({current_user, admin_user})
_OPTIONAL = frozenset({optional_user})

# One printable ASCII character at each end, printable ASCII or spaces between (the
# header's value is stripped, then checked by noclash.unique.idempotency.check_key).
_KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 0},
}


# The widget's API, called from other sites' pages: the CORS middleware may refuse an
# origin (noclash.api.cors) before the route runs.
WIDGET_PATHS = re.compile(r"^/api/(widget/|public/chatbots/)")

def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) the completed document.

    FastAPI's own method still builds and caches the document (anew when routes are added
    later); each new one is completed once.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi
    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if not completed or completed[0] is not document:
            complete(document, app.routes)
            completed[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


# Answers no operation makes, since they come before one is chosen (the router, the
# server) or are a bug: said once, for the whole API.
BEYOND_OPERATIONS = (
    (ProblemType.NOT_FOUND, "a path no route serves"),
    (ProblemType.METHOD_NOT_ALLOWED, "a path served, not for this method; `Allow` names them"),
    (ProblemType.REQUEST_TIMEOUT, "from `noclash serve`, which then closes the connection"),
    (ProblemType.HEADERS_TOO_LARGE, "from `noclash serve`, which then closes the connection"),
    (ProblemType.UNAVAILABLE, "from `noclash serve` past NOCLASH_MAX_CONNECTIONS"),
    (ProblemType.BODY_TOO_LARGE, "any request, whatever its route, whose body is too large"),
    (ProblemType.INTERNAL, "a bug, never by design: logged with its traceback"),
)


def _overview() -> str:
    lines = [
        "",
        "",
        "Every error is `application/problem+json` (RFC 9457, the `Problem` schema); its "
        f"`type` is `{PROBLEM_BASE}` and one of the problem types listed in "
        "docs/api.md. Each operation lists the statuses and types it can answer. Beyond "
        "them, any request may meet:",
        "",
    ]
    lines += [f"- {k.status} `{k.value}`: {why}" for k, why in BEYOND_OPERATIONS]
    return "\n".join(lines)


def complete(document: dict[str, Any], routes: list[Any]) -> None:
    """Complete FastAPI's ``document`` in place (see the module docstring)."""
    info = document.setdefault("info", {})
    info["description"] = info.get("description", "") + _overview()
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["securitySchemes"] = SECURITY_SCHEMES
    paths = document.get("paths", {})
    keyed = creates(paths)
    for route, method, path in _operations(routes):
        operation = paths.get(path, {}).get(method)
        if operation is None:
            continue
        covered = keyed.get(path) is operation
        create = covered and operation.get(REPLAYABLE, True)
        _authenticate(operation, route)
        if no_nul_parameters in _calls(route.dependant):
            _no_nul(operation)
        if create:
            _idempotency(operation)
        common = _common(route, method, path, operation)
        if create:
            common += [
                ProblemType.INVALID_IDEMPOTENCY_KEY,
                ProblemType.IDEMPOTENCY_KEY_IN_PROGRESS,
                ProblemType.IDEMPOTENCY_KEY_REUSED,
            ]
        elif covered:
            # Its answer holds a secret that is never stored: a key is refused.
            common.append(ProblemType.INVALID_IDEMPOTENCY_KEY)
        _problems(operation, common)
    # FastAPI's default 422 models, now referenced by nothing.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


# -- deriving from the route --------------------------------------------------------------
def _operations(routes: list[Any]) -> Iterator[tuple[Any, str, str]]:
    """Each operation's route as FastAPI documents it: with the dependencies of the app and
    of the routers it was included through (newer FastAPI includes routers lazily and
    resolves them per route, ``iter_route_contexts``; older ones copy the routes)."""
    contexts = getattr(routing, "iter_route_contexts", None)
    for context in contexts(routes) if contexts else routes:
        original = getattr(context, "original_route", context)
        if isinstance(original, APIRoute) and context.include_in_schema:
            for method in sorted(context.methods):
                yield context, method.lower(), context.path_format


def _calls(dependant: Dependant) -> set[Any]:
    """Every dependency callable of a route, at any depth."""
    found: set[Any] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.add(sub.call)
        found |= _calls(sub)
    return found


def _authenticate(operation: dict[str, Any], route: Any) -> None:
    calls = _calls(route.dependant)
    if calls & _REQUIRED:
        operation["security"] = [{BEARER: []}]
    elif calls & _OPTIONAL:
        # The empty requirement first: no token is fine, a token must be valid.
        operation["security"] = [{}, {BEARER: []}]


def _common(route: Any, method: str, path: str, operation: dict[str, Any]) -> list[ProblemType]:
    """The problem types ``route`` can answer without saying so itself."""
    calls = _calls(route.dependant)
    found = [ProblemType.UNAVAILABLE]
    if calls & (_REQUIRED | _OPTIONAL):
        found.append(ProblemType.UNAUTHENTICATED)
    if admin_user in calls:
        found.append(ProblemType.FORBIDDEN)
    if "requestBody" in operation:
        found += [ProblemType.MALFORMED_JSON, ProblemType.BODY_TOO_LARGE]
    if route.body_field is not None:
        found += [ProblemType.BAD_REQUEST, ProblemType.INVALID_INPUT]
    if no_nul_parameters in calls or operation.get("parameters"):
        found.append(ProblemType.INVALID_INPUT)
    if any(p.get("in") == "path" for p in operation.get("parameters", [])):
        found.append(ProblemType.NOT_FOUND)
    if method == "post" and path in LIMITED_ROUTES:
        found.append(ProblemType.RATE_LIMITED)
    if WIDGET_PATHS.match(path):
        found.append(ProblemType.ORIGIN_NOT_ALLOWED)
    return found


def _no_nul(operation: dict[str, Any]) -> None:
    """A NUL in any query or path parameter is a 422 (the app-wide dependency): said in
    each string parameter's schema that has no pattern, format or enum of its own."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") not in ("query", "path"):
            continue
        schema = parameter.get("schema", {})
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") == "string" and not branch.keys() & {"pattern", "format", "enum"}:
                branch["pattern"] = NO_NUL


def _idempotency(operation: dict[str, Any]) -> None:
    """A covered create takes ``Idempotency-Key``, and each answer it stores may come back
    as a replay, marked ``Idempotent-Replayed``."""
    anonymous = {} in operation.get("security", [{}])
    rule = "; without a bearer token it must be a UUID" if anonymous else ""
    operation.setdefault("parameters", []).append(
        {
            "name": _header_name(HEADER),
            "in": "header",
            "required": False,
            "description": "Run this create once: a retry with the same key and body gets "
            f"the first answer again (docs/idempotency.md){rule}.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_KEY_LENGTH,
                "pattern": _KEY_PATTERN,
            },
        }
    )
    replayed = {
        "description": "`true` when this is the stored answer of an earlier request.",
        "schema": {"type": "string", "enum": ["true"]},
    }
    for code, response in operation["responses"].items():
        if code.isdigit() and int(code) < 500:
            response.setdefault("headers", {})[_header_name(REPLAYED)] = replayed


def _header_name(lower: str) -> str:
    return "-".join(part.capitalize() for part in lower.split("-"))


# -- rendering the error answers ------------------------------------------------------------
def _problems(operation: dict[str, Any], common: list[ProblemType]) -> None:
    """Every 4xx and 5xx of ``operation`` as a Problem of its types; ``common`` added."""
    responses: dict[str, dict[str, Any]] = operation["responses"]
    by_status: dict[int, list[ProblemType]] = {}
    for code, response in responses.items():
        if not code.isdigit() or int(code) < 400:
            continue
        names = response.pop(PROBLEM_TYPES, None)
        kinds = [ProblemType(n) for n in names] if names else []
        by_status.setdefault(int(code), []).extend(kinds)
    for kind in common:
        by_status.setdefault(kind.status, []).append(kind)
    if any(status == 401 for status in by_status):
        # Every 401 answered to a request carrying Authorization counts against its
        # address; past the limit it becomes this 429 (noclash.api.ratelimit).
        by_status.setdefault(429, []).append(ProblemType.RATE_LIMITED)
    for status, kinds in by_status.items():
        unique = [k for k in ProblemType if k in kinds] or ProblemType.of_status(status)
        response = responses.setdefault(str(status), {})
        response["description"] = _description(status, response.get("description"), unique)
        response["content"] = {PROBLEM_JSON: {"schema": _schema(status, unique)}}
        headers = _problem_headers(status, unique)
        if headers:
            response.setdefault("headers", {}).update(headers)
    operation["responses"] = dict(sorted(responses.items(), key=lambda item: item[0]))


def _description(status: int, given: str | None, kinds: list[ProblemType]) -> str:
    phrase = HTTPStatus(status).phrase
    own = given if given and given not in (phrase, "Validation Error") else phrase
    lines = [f"- `{k.value}`: {k.summary}" for k in kinds]
    return own + "\n\n" + "\n".join(lines)


def _schema(status: int, kinds: list[ProblemType]) -> dict[str, Any]:
    """The Problem schema, narrowed to this status and these types."""
    return {
        "allOf": [
            {"$ref": PROBLEM_REF},
            {
                "properties": {
                    "type": {"enum": [k.uri for k in kinds]},
                    "status": {"const": status},
                }
            },
        ]
    }


def _problem_headers(status: int, kinds: list[ProblemType]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if ProblemType.UNAUTHENTICATED in kinds:
        headers["WWW-Authenticate"] = {
            "description": "`Bearer`, on an `unauthenticated` answer.",
            "schema": {"type": "string"},
        }
    if status == 429:
        headers["Retry-After"] = {**_RETRY_AFTER, "required": True}
    elif status == 503 or ProblemType.IDEMPOTENCY_KEY_IN_PROGRESS in kinds:
        headers["Retry-After"] = _RETRY_AFTER
    return headers


__all__ = ["BEARER", "BEYOND_OPERATIONS", "SECURITY_SCHEMES", "complete", "install"]
