"""Ordered registry of lint rules; each module has ``ID``, ``TITLE``, ``HELP``, ``check``."""

from __future__ import annotations

from types import ModuleType

from noclash.doctor.lint.rules import (
    column_type_rewrite,
    concurrently_in_transaction,
    index_not_concurrent,
    unchecked_block,
    unique_constraint_without_index,
)

RULES: tuple[ModuleType, ...] = (
    unique_constraint_without_index,
    index_not_concurrent,
    concurrently_in_transaction,
    column_type_rewrite,
    unchecked_block,
)
