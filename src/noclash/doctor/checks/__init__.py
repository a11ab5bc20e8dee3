"""The ordered registry of doctor checks.

Each check is one module named after its id (``duplicate_keys`` <-> ``duplicate-keys``)
holding ``ID``, ``TITLE``, ``HELP`` (what to change) and one function ``run(ctx)`` that
yields findings. The same id is the ``--exclude`` value, the JSON/SARIF rule id and the
docs page ``docs/doctor/<id>.md``. Order matters only for reading the report: data that
blocks a unique index first, then index health, then design smells.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Protocol

from noclash.doctor.checks import (
    amcheck_unique,
    duplicate_keys,
    invalid_indexes,
    lifecycle_unique,
    missing_unique_index,
    normalised_duplicates,
    not_valid_constraints,
    null_keys,
    redundant_indexes,
    sequence_behind,
    unreadable_tables,
    uuid_castability,
    weak_tokens,
)
from noclash.doctor.context import Context
from noclash.doctor.model import Finding


class Check(Protocol):
    ID: str
    TITLE: str
    HELP: str

    def run(self, ctx: Context) -> Iterator[Finding]: ...


CHECKS: tuple[ModuleType, ...] = (
    duplicate_keys,
    null_keys,
    normalised_duplicates,
    weak_tokens,
    uuid_castability,
    lifecycle_unique,
    sequence_behind,
    invalid_indexes,
    not_valid_constraints,
    amcheck_unique,
    missing_unique_index,
    redundant_indexes,
    unreadable_tables,
)

BY_ID: dict[str, ModuleType] = {c.ID: c for c in CHECKS}


def check_ids() -> list[str]:
    return [c.ID for c in CHECKS]
