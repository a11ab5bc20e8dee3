"""What each kind of statement locks, in the words the plan prints."""

from __future__ import annotations

from noclash.doctor.context import Context

SQLITE = "SQLite: the database write lock (BEGIN IMMEDIATE) for the transaction; readers continue"


def describe(ctx: Context, *kinds: str) -> str:
    if ctx.dialect.name == "sqlite":
        return SQLITE
    text = {
        "update": "ROW EXCLUSIVE on the table and row locks on the changed rows",
        "alter": "ACCESS EXCLUSIVE briefly (catalog-only ALTER TABLE, no rewrite)",
        "not_null": "ACCESS EXCLUSIVE while SET NOT NULL scans the table",
        "concurrent": "SHARE UPDATE EXCLUSIVE during CREATE/DROP INDEX CONCURRENTLY "
        "(reads and writes continue)",
        "constraint": "SHARE UPDATE EXCLUSIVE + brief ACCESS EXCLUSIVE for ADD/DROP CONSTRAINT",
        "sequence": "none: setval takes no table lock (and is not undone by ROLLBACK)",
    }
    return "; ".join(text[k] for k in kinds)
