"""events: the indexes on ``seq`` hold only sequenced rows.

An event is written without a ``seq`` (it is given after commit, in batches), so
``uq_events_seq``, ``ix_events_chatbot_id_seq`` and ``ix_events_conversation_id_seq``
took an entry for a NULL with every event, in the writer's transaction, and again when
the sequencer numbered it. Every reader of these indexes asks for ``seq > n``, which
implies ``seq IS NOT NULL``, so the indexes are now partial (``WHERE seq IS NOT NULL``):
an event costs its writer three index entries fewer, and the sequencer, which numbers a
thousand rows at a time, writes them instead. The rows, the uniqueness of ``seq`` and
every query's plan stay as they were.

SQLite cannot drop a table's UNIQUE constraint in place: ``events`` is rebuilt (a batch
migration, reflected, with foreign keys off as for 0007), after its indexes are dropped
so that each is created again exactly as declared here. On PostgreSQL each change is one
statement; the indexes are built in the migration's transaction, so writes to ``events``
wait while they are built (about a second per million events).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"

UNSEQUENCED = sa.text("seq IS NULL")
SEQUENCED = sa.text("seq IS NOT NULL")


INDEXES = ("ix_events_unsequenced", "ix_events_chatbot_id_seq", "ix_events_conversation_id_seq")


def _index(
    name: str, columns: list[str], where: sa.TextClause | None, unique: bool = False
) -> None:
    options = {"postgresql_where": where, "sqlite_where": where} if where is not None else {}
    op.create_index(name, "events", columns, unique=unique, **options)


def _indexes(sequenced: sa.TextClause | None) -> None:
    """The indexes on ``events``, those on ``seq`` partial over ``sequenced`` (None:
    whole)."""
    _index("ix_events_unsequenced", ["id"], UNSEQUENCED)
    _index("ix_events_chatbot_id_seq", ["chatbot_id", "seq"], sequenced)
    _index("ix_events_conversation_id_seq", ["conversation_id", "seq"], sequenced)


def upgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint(op.f("uq_events_seq"), type_="unique")
    _index("uq_events_seq", ["seq"], SEQUENCED, unique=True)
    _indexes(SEQUENCED)


def downgrade() -> None:
    for name in ("uq_events_seq", *INDEXES):
        op.drop_index(name, table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.create_unique_constraint(op.f("uq_events_seq"), ["seq"])
    _indexes(None)
