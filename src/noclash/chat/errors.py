"""Domain errors, translated to HTTP in one place (``noclash.api.errors``)."""

from __future__ import annotations


class ChatError(Exception):
    """Root of the domain errors."""


class NotFound(ChatError):
    """The record does not exist, or belongs to someone else (same answer, on purpose)."""


class Forbidden(ChatError):
    """The caller is known but may not do this."""


class Unauthenticated(ChatError):
    """A bearer token is required (or the one given is not valid)."""


class InvalidInput(ChatError):
    """Input that passed schema validation but breaks a domain rule."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Conflict(ChatError):
    """A state conflict other than a unique violation (e.g. reopening beside an active one)."""

    def __init__(self, message: str, *, fields: tuple[str, ...] = (), **extra: object) -> None:
        super().__init__(message)
        self.fields = fields
        self.extra = extra
