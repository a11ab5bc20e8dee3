"""the outbox: deliveries of replies to the platforms, and the connections' access tokens.

- ``connections.access_token``: the platform credential replies are sent with (nullable:
  a connection may only receive);
- ``deliveries``: one row per outgoing message per destination
  (``uq_deliveries_message_id_destination``), written in the reply's transaction and
  claimed by dispatchers. ``ix_deliveries_due`` is partial (pending rows only), so the
  history of sent messages costs the dispatcher's scan nothing;
- ``ix_conversations_snoozed_until`` (partial, snoozed rows): the dispatcher reopens due
  snoozes every second.

Both are additions: SQLite adds the column in place (no table rebuild), and nothing
existing changes. The SQL is written out here, not read from live code, so this revision
does tomorrow what it does today.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PENDING = sa.text("status IN ('queued', 'sending')")
SNOOZED = sa.text("status = 'SNOOZED'")
STATUSES = "status IN ('queued', 'sending', 'sent', 'failed', 'unknown')"


def upgrade() -> None:
    op.add_column("connections", sa.Column("access_token", sa.String(length=1000)))
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("destination", sa.String(length=20), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("connection_id", sa.Uuid()),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim_token", sa.Uuid()),
        sa.Column("last_error", sa.Text()),
        sa.Column("platform_message_id", sa.String(length=300)),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(STATUSES, name=op.f("ck_deliveries_status")),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"],
            name=op.f("fk_deliveries_message_id_messages"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"],
            name=op.f("fk_deliveries_conversation_id_conversations"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"], ["connections.id"],
            name=op.f("fk_deliveries_connection_id_connections"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "message_id", "destination", name=op.f("uq_deliveries_message_id_destination")
        ),
    )  # fmt: skip
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index(
        "ix_deliveries_conversation_id_id", "deliveries", ["conversation_id", "id"]
    )
    op.create_index("ix_deliveries_connection_id", "deliveries", ["connection_id"])
    op.create_index(
        "ix_conversations_snoozed_until",
        "conversations",
        ["snoozed_until"],
        postgresql_where=SNOOZED,
        sqlite_where=SNOOZED,
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_snoozed_until", "conversations")
    op.drop_table("deliveries")
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("access_token")
