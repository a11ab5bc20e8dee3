"""RFC 9457 problem details: the one place where errors become HTTP responses.

Every error answer is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and, where a field is at fault, ``fields``. A unique violation that escapes the
domain code, wherever it comes from, is a 409 naming the columns; an unexpected exception
is logged with its traceback and answered with a bare 500 problem, never the traceback.

A database that cannot be reached (or a pool with no connection to give) is a 503 with
``Retry-After`` wherever it is met: in a route, in the authentication dependency, or in
the middlewares that run outside FastAPI's exception handlers, which call
:func:`database_error` themselves so every route answers the same way.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match, Mount

from noclash.api.problems import PROBLEM_JSON, ProblemType
from noclash.channels.sending import PlatformUnreachable
from noclash.chat.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from noclash.db.dialects import APP_DIALECTS
from noclash.db.tables import metadata
from noclash.unique import ClaimNotSettled, UniqueViolation, translate

log = logging.getLogger("noclash.api")

# A driver error does not say which database raised it: each dialect is asked in turn.
_DIALECTS = APP_DIALECTS.every()
# A transient failure: the same request, sent again shortly, is expected to succeed.
RETRY_AFTER = {"Retry-After": "1"}


def problem(
    status: int,
    detail: str,
    *,
    kind: ProblemType | None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The ``application/problem+json`` answer. ``kind`` is a member of the registry
    (:class:`~noclash.api.problems.ProblemType`), so every type a client can meet is
    declared and documented; None (``about:blank``, RFC 9457: nothing beyond the status)
    only for a framework answer of a status the registry has no type for."""
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": ProblemType(kind).uri if kind else "about:blank",
        "title": phrase,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def unique_violation_problem(exc: UniqueViolation) -> JSONResponse:
    fields = list(exc.columns)
    what = ", ".join(fields) or "a unique key"
    return problem(
        409,
        f"a row of {exc.table or 'this table'} already has this {what}",
        kind=ProblemType.UNIQUE_VIOLATION,
        fields=fields,
        constraint=exc.constraint,
    )


def unavailable(detail: str = "the database is unavailable; retry later") -> JSONResponse:
    return problem(503, detail, kind=ProblemType.UNAVAILABLE, headers=RETRY_AFTER)


def database_error(exc: BaseException, method: str, path: str) -> JSONResponse | None:
    """The answer to an error from the database layer; None when ``exc`` is not one.

    Most specific first: a unique violation (409), a reference to a row deleted meanwhile
    (404), data the database refused (422), a database that accepts no writes now (503
    with Retry-After: a standby, a maintenance switch), the database or the pool out of
    reach (503 with Retry-After), anything else (500).
    """
    if isinstance(exc, PoolTimeout):
        # Every pooled connection stayed busy for pool_timeout: overload, transient.
        log.warning("no database connection for %s %s: %s", method, path, exc)
        return unavailable()
    if not isinstance(exc, DBAPIError):
        return None
    violation = translate(exc, metadata)
    if violation is not None:
        return unique_violation_problem(violation)
    if any(d.is_foreign_key_violation(exc.orig) for d in _DIALECTS):
        # A row that refers to one deleted meanwhile (a message for a connection whose
        # DELETE committed first): what the request refers to is gone, as a retry finds.
        log.info("referenced row deleted during %s %s: %s", method, path, exc.orig)
        return problem(
            404, "a record this request refers to no longer exists", kind=ProblemType.NOT_FOUND
        )
    if isinstance(exc, DataError):
        # SQLSTATE class 22 (a NUL byte, a value out of range...): the input is at
        # fault, not the server, and nothing was stored.
        log.info("data refused on %s %s: %s", method, path, exc.orig)
        return problem(
            422, "a value in the request cannot be stored", kind=ProblemType.INVALID_INPUT
        )
    if any(d.is_read_only(exc.orig) for d in _DIALECTS):
        # A standby after a failover, a database set read-only for maintenance: nothing
        # was stored and the same request succeeds once writes are accepted again. On
        # PostgreSQL the driver raises it as an InternalError, which was a 500.
        log.warning("database read-only on %s %s: %s", method, path, exc.orig)
        return unavailable("the database accepts no writes at the moment (it is read-only); "
                           "retry later")  # fmt: skip
    if any(d.is_lock_timeout(exc.orig) for d in _DIALECTS):
        # Another transaction held a lock this request needed for longer than the bound
        # (NOCLASH_LOCK_TIMEOUT_MS): nothing was stored; the retry runs once it lets go.
        log.warning("lock wait timed out on %s %s: %s", method, path, exc.orig)
        return unavailable("a record this request must change is locked by another "
                           "transaction; retry later")  # fmt: skip
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        log.warning("database unavailable on %s %s: %s", method, path, exc)
        return unavailable()
    log.error("database error on %s %s", method, path, exc_info=exc)
    return problem(500, "internal error", kind=ProblemType.INTERNAL)


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method some route of ``app`` answers on ``path``, sorted.

    The router answers 405 from the first route whose path matches, naming only that
    route's methods; a path served by several routes (``GET`` and ``PATCH`` of
    ``/api/chatbots/{id}``) must name all of them (RFC 9110, 15.5.6). Each route is asked
    whether it serves the path with each method (``matches``, the router's own test), so
    the pages and static files count too (the OpenAPI document leaves them out, and a 405
    there named no method at all). A ``GET`` also answers ``HEAD``
    (:mod:`noclash.api.head`); a mount serves files, by ``GET`` and ``HEAD`` alone.
    """
    allowed: set[str] = set()
    for route in app.routes:
        if isinstance(route, Mount):
            if route.matches({"type": "http", "path": path, "root_path": ""})[0] != Match.NONE:
                allowed |= {"GET", "HEAD"}
            continue
        for method in _METHODS - allowed:
            scope = {"type": "http", "path": path, "root_path": "", "method": method}
            if route.matches(scope)[0] == Match.FULL:
                allowed.add(method)
    if "GET" in allowed:
        allowed.add("HEAD")
    return sorted(allowed)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def _validation_fields(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc), "message": err.get("msg", ""), "type": err["type"]})
    return out


class Throttled(Exception):
    """Too many of something held at once (a route's own limit, apart from the rate
    limits of :mod:`noclash.api.ratelimit`): 429 ``rate-limited`` with ``Retry-After``."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(Throttled)
    async def _throttled(_req: Request, exc: Throttled) -> JSONResponse:
        return problem(
            429,
            str(exc),
            kind=ProblemType.RATE_LIMITED,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(UniqueViolation)
    async def _unique(_req: Request, exc: UniqueViolation) -> JSONResponse:
        return unique_violation_problem(exc)

    @app.exception_handler(ClaimNotSettled)
    async def _not_settled(req: Request, exc: ClaimNotSettled) -> JSONResponse:
        # A claim kept losing to rows that moved (closed, deleted) on every attempt: no
        # duplicate was stored, and a retry settles it. Transient, so 503, never a 500.
        log.warning("claim not settled on %s %s: %s", req.method, req.url.path, exc)
        return unavailable("the request kept colliding; retry later")

    @app.exception_handler(PlatformUnreachable)
    async def _platform(req: Request, exc: PlatformUnreachable) -> JSONResponse:
        # Asking a platform whose access token this is failed: nothing was stored, and the
        # same request may succeed shortly.
        log.warning("platform unreachable on %s %s: %s", req.method, req.url.path, exc)
        return problem(503, str(exc), kind=ProblemType.PLATFORM_UNAVAILABLE, headers=RETRY_AFTER)

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, exc: NotFound) -> JSONResponse:
        return problem(404, str(exc), kind=ProblemType.NOT_FOUND)

    @app.exception_handler(Unauthenticated)
    async def _unauth(_req: Request, exc: Unauthenticated) -> JSONResponse:
        return problem(
            401, str(exc), kind=ProblemType.UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(_req: Request, exc: Forbidden) -> JSONResponse:
        return problem(403, str(exc), kind=ProblemType.FORBIDDEN)

    @app.exception_handler(ClientDisconnect)
    async def _gone(req: Request, _exc: ClientDisconnect) -> Response:
        # The connection closed before the body was complete (the client left, or the
        # server timed the body out): nobody is left to answer, and it is no error of ours.
        client = req.client.host if req.client else "?"
        log.info("request abandoned by %s: %s %s", client, req.method, req.url.path)
        return Response(status_code=400)

    @app.exception_handler(InvalidInput)
    async def _invalid(_req: Request, exc: InvalidInput) -> JSONResponse:
        fields = [{"field": exc.field, "message": str(exc)}] if exc.field else None
        return problem(422, str(exc), kind=ProblemType.INVALID_INPUT, fields=fields)

    @app.exception_handler(Conflict)
    async def _conflict(_req: Request, exc: Conflict) -> JSONResponse:
        return problem(
            409, str(exc), kind=ProblemType.CONFLICT, fields=list(exc.fields), **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _validation_fields(exc)
        if any(f["type"] == "json_invalid" for f in fields):
            return problem(
                400, "the request body is not valid JSON", kind=ProblemType.MALFORMED_JSON
            )
        return problem(
            422,
            "the request does not match the schema",
            kind=ProblemType.INVALID_INPUT,
            fields=fields,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own answers (no route for the path, or not for the method, a body
        # it cannot read): typed like every other problem, by the status's name
        # ("not-found", "method-not-allowed", "bad-request"), from the registry.
        phrase = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if isinstance(exc.detail, str) else phrase
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404 and detail == phrase:
            detail = f"no route for {req.url.path}"
        if exc.status_code == 405:
            allowed = allowed_methods(req.app, req.url.path)
            headers["Allow"] = ", ".join(allowed)
            if detail == phrase:
                detail = f"{req.method} is not allowed here; allowed: {', '.join(allowed)}"
        kind = ProblemType.for_framework(exc.status_code)
        return problem(exc.status_code, detail, kind=kind, headers=headers or None)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _db(req: Request, exc: Exception) -> JSONResponse:
        answer = database_error(exc, req.method, req.url.path)
        return answer or problem(500, "internal error", kind=ProblemType.INTERNAL)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", req.method, req.url.path, exc_info=exc)
        return problem(500, "internal error", kind=ProblemType.INTERNAL)
