"""Request and response bodies shared by several routers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


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


class Page(BaseModel):
    items: list
    next_cursor: str | None
