"""event_sequence: the last ``seq`` given, a counter that only goes up.

The sequencer numbered unnumbered events from ``max(events.seq)``. Events are deleted:
deleting a chatbot takes its events with it, and the retention rule may prune every one.
When the newest ones went, the maximum went down and the sequencer gave numbers again
that live readers had already passed: a stream at ``seq = 8`` whose tenant's next events
were numbered 4 to 7 never saw them. The numbers now come from this one-row table, which
the sequencer reads and moves forward in its own transaction, under its lock; deleting
events never moves it back.

The row is created here, at the highest number given so far (``max(seq)`` of the events
kept, 0 when there are none), so every number still to come is above every number a
reader may have seen. ``one``, the primary key, can only be 1: there is one row. The SQL
is written out here, not read from live code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.create_table(
        "event_sequence",
        sa.Column("one", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("one = 1", name=op.f("ck_event_sequence_one_row")),
        sa.PrimaryKeyConstraint("one", name=op.f("pk_event_sequence")),
    )
    op.execute(
        "INSERT INTO event_sequence (one, last_seq) SELECT 1, coalesce(max(seq), 0) FROM events"
    )


def downgrade() -> None:
    op.drop_table("event_sequence")
