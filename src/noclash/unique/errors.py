"""The exceptions of :mod:`noclash.unique`.

Catch the root, or the one you can act on::

    UniqueError
     ├── UniqueViolation      a unique constraint or index rejected a write
     ├── ClaimNotSettled      insert_or_get lost every race and never saw the winner
     └── InvalidIdempotencyKey (also a ValueError; noclash.unique.idempotency)
                              a client's key is empty, too long or not printable ASCII

A mistake in the calling code rather than in the data (a key the table does not declare,
values without the key's columns) is a ``LookupError`` or ``ValueError`` of its own.

Driver errors (``psycopg.errors.UniqueViolation``, ``sqlite3.IntegrityError``) are
translated in one place, :func:`noclash.unique.translate.translate`, and chained with
``raise ... from exc`` so the original stays in the traceback.
"""

from __future__ import annotations

from typing import Any


class UniqueError(Exception):
    """Root of every exception raised by :mod:`noclash.unique`."""


class UniqueViolation(UniqueError):
    """A write was rejected by a unique constraint or unique index.

    ``table``, ``columns`` and ``constraint`` come from the table metadata when the
    violated constraint is declared there (partial indexes included), otherwise from what
    the driver reported; any of them may then be ``None``/empty.
    """

    def __init__(
        self,
        message: str,
        *,
        table: str | None,
        columns: tuple[str, ...],
        constraint: str | None,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.columns = columns
        self.constraint = constraint

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle rebuilds an exception as ``cls(*args)``, which these keyword-only fields
        # refuse: without this, a violation raised in a worker process
        # (ProcessPoolExecutor, multiprocessing, a task queue) breaks the unpickling side.
        return (_rebuild_violation, (str(self), self.table, self.columns, self.constraint))

    def __repr__(self) -> str:
        return (
            f"UniqueViolation(table={self.table!r}, columns={self.columns!r}, "
            f"constraint={self.constraint!r})"
        )


def _rebuild_violation(
    message: str, table: str | None, columns: tuple[str, ...], constraint: str | None
) -> UniqueViolation:
    return UniqueViolation(message, table=table, columns=columns, constraint=constraint)


class ClaimNotSettled(UniqueError):
    """``insert_or_get`` saw a conflict on every attempt but never read the winner.

    It happens only if the winning row keeps disappearing (deleted, or moved out of a
    partial index's predicate) between the INSERT and the read, attempt after attempt.
    """
