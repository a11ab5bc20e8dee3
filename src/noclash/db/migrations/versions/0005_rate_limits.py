"""rate_limits: fixed-window hit counters shared by every noclash process.

The limits of the public endpoints must hold across processes and hosts, so their counters
live in the database: one row per (bucket, window), incremented by an upsert. The primary
key leads with ``window_start`` so that purging old windows deletes a range of it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("bucket", sa.String(length=200), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("window_start", "bucket", name=op.f("pk_rate_limits")),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
