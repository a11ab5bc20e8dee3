"""Errors of the doctor, rooted in :class:`DoctorError`.

::

    DoctorError
    ├── CannotConnect      the URL is malformed, the server is down, or the login is refused
    ├── CannotRead         the catalog or a table cannot be read (permissions, missing tables)
    ├── UnsupportedDatabase  neither SQLite nor PostgreSQL
    ├── UnsupportedSchema  the schema holds what the doctor cannot parse or safely change
    └── RepairFailed       a repair's post-condition did not hold; its transaction was undone

The first four mean "the doctor could not do its job" and become exit code 2 at the CLI
edge; findings are never exceptions. Context is keyword-only so messages stay uniform.
"""

from __future__ import annotations


class DoctorError(Exception):
    """Root of every error the doctor raises on purpose."""

    exit_code: int = 2


class CannotConnect(DoctorError):
    """The database URL cannot be parsed or the server refuses the connection."""


class CannotRead(DoctorError):
    """The catalog or a table cannot be read, most often for lack of a privilege."""

    def __init__(self, message: str, *, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


class UnsupportedDatabase(DoctorError):
    """The URL names a database other than SQLite or PostgreSQL."""


class UnsupportedSchema(DoctorError):
    """The schema has something the doctor cannot parse or change safely (a CREATE TABLE it
    cannot edit, a foreign key SQLite cannot check); nothing was changed."""


class RepairFailed(DoctorError):
    """A repair ran but its post-condition did not hold, so its transaction was rolled back."""

    exit_code = 1

    def __init__(self, message: str, *, action: str, table: str) -> None:
        super().__init__(message)
        self.action = action
        self.table = table
