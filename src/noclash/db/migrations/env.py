"""Alembic environment: runs inside ``noclash.db.migrate`` with a connection it supplies."""

from __future__ import annotations

from alembic import context

from noclash.db.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place: batch mode recreates the table.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
