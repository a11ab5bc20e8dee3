"""Request bodies shared by several routers, and the one text-length rule."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from noclash.chat.errors import InvalidInput
from noclash.config import Settings


class StrictModel(BaseModel):
    """Request bodies reject unknown fields (a typo is a 422, not silently ignored) and NUL
    characters, which PostgreSQL cannot store in text (SQLite would), so both databases
    answer the same 422 naming the field."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


def check_text(text: str, settings: Settings) -> str:
    """A message text within ``NOCLASH_MAX_TEXT_LENGTH``: a setting, not a column length
    (``messages.text`` is unbounded), so it is checked here rather than in the model."""
    if len(text) > settings.max_text_length:
        raise InvalidInput(
            f"text is longer than {settings.max_text_length} characters", field="text"
        )
    return text
