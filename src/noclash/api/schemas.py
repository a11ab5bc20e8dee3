"""Request bodies shared by several routers, the one text-length rule, and strict parsing.

Every request body is a :class:`StrictModel`, checked against the JSON Schema the OpenAPI
document publishes for it *before* pydantic converts anything:

- **JSON types are not coerced.** FastAPI hands pydantic the parsed body as Python objects,
  and pydantic's lax mode would then read ``"yes"`` as ``true``, ``"5"`` as ``5`` and
  ``0`` (or ``"0"``) as 1970-01-01T00:00:00Z. pydantic's own strict mode cannot be used on
  parsed JSON: it wants a ``UUID``, an ``Enum`` or a ``datetime`` object where JSON can
  only carry a string. So each field's value must have a JSON type its schema allows
  (``boolean``, ``integer``, ``string``...), and only then is it converted;
- **a time is RFC 3339 text with an offset** (``format: date-time``): no numbers, no date
  alone, no naive time. It is converted to UTC here, so a time at the edge of the calendar
  that has no UTC form (``0001-01-01T00:00:00+14:00``) is a 422 naming the field, not an
  ``OverflowError`` when the database driver converts it later;
- **text is stored as sent.** Nothing is trimmed: a length limit counts every character
  the client sent, and what is stored is what was sent. A string that must not be empty
  (``minLength`` 1) must also hold something besides whitespace: ``"   "`` is no name;
- unknown fields are a 422 (a typo is not silently ignored), and so is a NUL character,
  which PostgreSQL cannot store in text (SQLite would): both databases give the same 422
  naming the field.

The last two text rules are published too: every string of a body schema without a
``pattern`` of its own gets one (:func:`publish_text_rules`), "no NUL" and, where
``minLength`` is 1 or more, "something besides whitespace", written with
:data:`noclash.chat.text.WHITESPACE` so that a JSON Schema validator refuses exactly the
strings refused here.

Query and path parameters get the NUL rule too (:func:`no_nul_parameters`, a dependency of
the whole app): on PostgreSQL a NUL reaching a query would be a driver error, on SQLite a
silent miss, and the two databases must answer alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from fastapi import Request
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from noclash.chat.errors import InvalidInput
from noclash.chat.text import WHITESPACE
from noclash.config import Settings

# RFC 3339 section 5.6 ``date-time``, offset required (``Z`` or ``+hh:mm``).
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)

# The JSON type of each Python value json.loads makes.
_JSON_TYPES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


@dataclass(frozen=True, slots=True)
class _FieldRule:
    """What a field's JSON Schema allows: its JSON types (None: any), whether a string is
    a ``date-time``, whether a string must hold more than whitespace."""

    types: frozenset[str] | None
    date_time: bool
    not_blank: bool

    def allows(self, kind: str) -> bool:
        if self.types is None:
            return True
        return kind in self.types or (kind == "integer" and "number" in self.types)


def _branches(node: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of a schema node, ``$ref`` resolved and ``anyOf`` flattened."""
    if ref := node.get("$ref"):
        node = defs[ref.rsplit("/", 1)[-1]]
    for combinator in ("anyOf", "oneOf"):
        if combinator in node:
            return [b for part in node[combinator] for b in _branches(part, defs)]
    return [node]


def _rule(node: dict[str, Any], defs: dict[str, Any]) -> _FieldRule:
    types: set[str] | None = set()
    strings = times = 0
    not_blank = False
    for branch in _branches(node, defs):
        kind = branch.get("type")
        if kind is None and "enum" in branch:
            kind = sorted({_JSON_TYPES.get(type(v), "string") for v in branch["enum"]})
        if kind is None:
            types = None  # the schema says nothing: anything goes (pydantic decides)
            continue
        if types is not None:
            types.update(kind if isinstance(kind, list) else [kind])
        if "string" in (kind if isinstance(kind, list) else [kind]):
            strings += 1
            times += branch.get("format") == "date-time"
            not_blank |= branch.get("minLength", 0) >= 1
    # Only a field whose every string form is a date-time must match RFC 3339.
    date_time = strings > 0 and times == strings
    return _FieldRule(None if types is None else frozenset(types), date_time, not_blank)


# No NUL anywhere; and for a string that must not be blank, one character that is neither
# NUL nor whitespace (what str.strip() removes).
NO_NUL = r"^[^\x00]*$"
NOT_BLANK = rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$"


def publish_text_rules(schema: dict[str, Any]) -> None:
    """Add the NUL and blank rules to each string form of each property of ``schema``
    that has no pattern of its own (see the module docstring)."""
    for prop in schema.get("properties", {}).values():
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") == "string" and "pattern" not in branch:
                branch["pattern"] = NOT_BLANK if branch.get("minLength", 0) >= 1 else NO_NUL


class StrictModel(BaseModel):
    """A request body: strict JSON types, times as RFC 3339 text in range, text as sent,
    no unknown fields, no NUL (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=publish_text_rules)

    _rules: ClassVar[dict[type, dict[str, _FieldRule]]] = {}

    @classmethod
    def _field_rules(cls) -> dict[str, _FieldRule]:
        """Each field's rule, read once per class from its own JSON Schema: the checks
        are the published contract, and a field added tomorrow is covered by it."""
        rules = StrictModel._rules.get(cls)
        if rules is None:
            schema = cls.model_json_schema()
            defs = schema.get("$defs", {})
            by_alias = schema.get("properties", {})
            rules = {
                name: _rule(by_alias.get(field.alias or name, {}), defs)
                for name, field in cls.model_fields.items()
            }
            StrictModel._rules[cls] = rules
        return rules

    @field_validator("*", mode="before")
    @classmethod
    def _json_type(cls, value: Any, info: ValidationInfo) -> Any:
        rule = cls._field_rules().get(info.field_name or "")
        if rule is None:
            return value
        kind = _JSON_TYPES.get(type(value))
        if kind is None:  # not from JSON (a model built in code): pydantic decides
            return value
        if not rule.allows(kind):
            expected = " or ".join(sorted(rule.types or ()))
            raise PydanticCustomError(
                "json_type",
                "must be JSON {expected}, not {kind}",
                {"expected": expected, "kind": kind},
            )
        if kind == "string":
            if rule.date_time and not RFC3339.fullmatch(value):
                raise PydanticCustomError(
                    "date_time_format",
                    "must be an RFC 3339 date-time with an offset, e.g. 2026-01-01T10:00:00+01:00",
                )
            if rule.not_blank and value and not value.strip():
                raise PydanticCustomError("blank_string", "must not be blank")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if isinstance(value, datetime) and value.tzinfo is not None:
            try:
                return value.astimezone(UTC)
            except OverflowError:
                raise PydanticCustomError(
                    "datetime_range", "is outside the range of a UTC time (years 1 to 9999)"
                ) from None
        return value


async def no_nul_parameters(request: Request) -> None:
    """A NUL in a query or path parameter is a 422 naming it, on every route and both
    databases (PostgreSQL's driver would refuse it, SQLite would silently match nothing)."""
    for name, value in (*request.query_params.multi_items(), *request.path_params.items()):
        if isinstance(value, str) and "\x00" in value:
            raise InvalidInput(f"{name} must not contain NUL characters", field=name)


def check_text(text: str, settings: Settings) -> str:
    """A message text within ``NOCLASH_MAX_TEXT_LENGTH``: a setting, not a column length
    (``messages.text`` is unbounded), so it is checked here rather than in the model."""
    if len(text) > settings.max_text_length:
        raise InvalidInput(
            f"text is longer than {settings.max_text_length} characters", field="text"
        )
    return text
