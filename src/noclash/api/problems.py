"""The registry of problem types: every ``type`` an error answer of noclash can carry.

Why one declared set: a client branches on ``type`` (``unique-violation`` versus
``conflict``, ``unavailable`` versus ``not-configured``), so the set is part of the
contract, like a route or a status. Every answer is written with a member of
:class:`ProblemType` (:func:`noclash.api.errors.problem` takes nothing else, and the
server's own answers in :mod:`noclash.serving` use it too); the OpenAPI document names the
types each operation can answer, per status (:mod:`noclash.api.openapi`); and
``docs/api.md`` lists every member (``tests/test_problem_types.py`` fails otherwise, and
when code spells a type that is not a member).

This module imports nothing of noclash, so the server (:mod:`noclash.serving`) can use it
without importing the app.
"""

from __future__ import annotations

from enum import StrEnum
from http import HTTPStatus

# A problem's ``type`` is this base plus the member's value (RFC 9457, section 3.1.1).
PROBLEM_BASE = "https://noclash.dev/problems/"
PROBLEM_JSON = "application/problem+json"


class ProblemType(StrEnum):
    """A problem type: its name (the value), the one status it is answered with, and when.

    ``summary`` is what the OpenAPI document says of it; ``docs/api.md`` says more.
    """

    status: int
    summary: str

    def __new__(cls, value: str, status: int, summary: str) -> ProblemType:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.summary = summary
        return member

    @property
    def uri(self) -> str:
        """The ``type`` member of the answer's body."""
        return PROBLEM_BASE + self.value

    @property
    def phrase(self) -> str:
        return HTTPStatus(self.status).phrase

    # -- 400 --------------------------------------------------------------------------------
    MALFORMED_JSON = (
        "malformed-json",
        400,
        "the body is not JSON, or nests deeper than 64 levels",
    )
    BAD_REQUEST = "bad-request", 400, "the body could not be read at all (not UTF-8)"
    INVALID_IDEMPOTENCY_KEY = (
        "invalid-idempotency-key",
        400,
        "the Idempotency-Key is malformed, not a UUID from a caller without a token, "
        "or sent where an answer cannot be replayed",
    )
    MALFORMED_PAYLOAD = (
        "malformed-payload",
        400,
        "a webhook body that is not the platform's shape",
    )
    # -- 401, 403 ---------------------------------------------------------------------------
    UNAUTHENTICATED = (
        "unauthenticated",
        401,
        "missing, malformed or unknown bearer token",
    )
    BAD_SIGNATURE = (
        "bad-signature",
        401,
        "the webhook's signature or secret token is missing or wrong",
    )
    FORBIDDEN = "forbidden", 403, "the caller is not an administrator"
    ORIGIN_NOT_ALLOWED = (
        "origin-not-allowed",
        403,
        "a page of a site not in the chatbot's allowed_origins called its widget API",
    )
    VERIFICATION_FAILED = (
        "verification-failed",
        403,
        "Meta's hub.verify_token does not match (or no verify token is configured)",
    )
    # -- 404, 405, 408 ----------------------------------------------------------------------
    NOT_FOUND = (
        "not-found",
        404,
        "unknown id or token, someone else's record, or a record deleted meanwhile",
    )
    METHOD_NOT_ALLOWED = (
        "method-not-allowed",
        405,
        "the path exists, not for this method (Allow names its methods)",
    )
    REQUEST_TIMEOUT = (
        "request-timeout",
        408,
        "the request head or body did not arrive in time (the server closes the connection)",
    )
    # -- 409 --------------------------------------------------------------------------------
    UNIQUE_VIOLATION = (
        "unique-violation",
        409,
        "a unique key is taken: fields names the columns, constraint the index",
    )
    CONFLICT = (
        "conflict",
        409,
        "the record's state forbids this (conversation_id names the conversation at stake)",
    )
    IDEMPOTENCY_KEY_IN_PROGRESS = (
        "idempotency-key-in-progress",
        409,
        "a request with this Idempotency-Key is still running (Retry-After)",
    )
    # -- 413, 422, 429, 431 -----------------------------------------------------------------
    BODY_TOO_LARGE = (
        "body-too-large", 413,
        "the body exceeds NOCLASH_MAX_BODY_BYTES (NOCLASH_MAX_WEBHOOK_BODY_BYTES on /webhooks/)",
    )  # fmt: skip
    INVALID_INPUT = (
        "invalid-input",
        422,
        "the body or a parameter breaks the schema or a rule: fields lists {field, message, type}",
    )
    IDEMPOTENCY_KEY_REUSED = (
        "idempotency-key-reused",
        422,
        "the Idempotency-Key was used for another request",
    )
    RATE_LIMITED = (
        "rate-limited",
        429,
        "too many requests of this kind in the current window (Retry-After)",
    )
    HEADERS_TOO_LARGE = (
        "headers-too-large",
        431,
        "the request head is too large or has too many fields (the connection is closed)",
    )
    # -- 500, 503 ---------------------------------------------------------------------------
    INTERNAL = "internal", 500, "a bug: logged with its traceback, answered without it"
    UNAVAILABLE = (
        "unavailable",
        503,
        "the database or a pooled connection cannot be had, accepts no writes (read-only), "
        "or a lock another client held outlasted its bound; a claim kept colliding; or the "
        "process has too many connections; retry (Retry-After)",
    )
    NOT_READY = (
        "not-ready",
        503,
        "the database cannot be reached, accepts no writes, or is behind this process's "
        "newest migration",
    )
    NOT_CONFIGURED = (
        "not-configured",
        503,
        "the Meta webhook while NOCLASH_META_APP_SECRET is unset",
    )
    PLATFORM_UNAVAILABLE = (
        "platform-unavailable",
        503,
        "the platform could not be asked whose access_token this is; nothing was stored "
        "(Retry-After)",
    )

    @classmethod
    def of_status(cls, status: int) -> list[ProblemType]:
        """Every type answered with ``status``, in declaration order."""
        return [member for member in cls if member.status == status]

    @classmethod
    def for_framework(cls, status: int) -> ProblemType | None:
        """The type of an answer the framework itself makes (no route for the path, not for
        this method, an unreadable body): the one registered type named by the status's
        phrase (``Not Found``: ``not-found``), or None for a status with none."""
        name = HTTPStatus(status).phrase.lower().replace(" ", "-")
        member = cls._value2member_map_.get(name)
        return member if isinstance(member, ProblemType) else None


__all__ = ["PROBLEM_BASE", "PROBLEM_JSON", "ProblemType"]
