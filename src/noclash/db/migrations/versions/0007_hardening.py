"""the custom channel, per-chatbot names for it, one active API conversation per customer.

- ``connections.channel`` may be ``custom`` (an integration of the chatbot's owner that
  posts to ``/api/connections/{id}/inbound``): the CHECK constraint is replaced;
- ``(channel, external_id)`` stays globally unique for the platforms, whose ids name one
  receiver in the world, and a custom channel's ``external_id`` (a name its owner chose)
  becomes unique per chatbot, so one tenant's "sms" cannot block another's: the unique
  constraint becomes two partial unique indexes. Every existing row satisfies both (the
  constraint was global and no custom row could exist);
- ``uq_conversations_active_unconnected_chatbot_id_psid``: at most one OPEN or SNOOZED
  conversation per (chatbot, psid) among those with no connection. Existing duplicates
  would make the CREATE INDEX fail, so every active duplicate but the newest is closed
  first: the newest stays active, as if the rule had held when the older ones were made
  (their messages are kept; a reopen answers 409 naming the active one).

SQLite cannot change a CHECK or drop a table's UNIQUE constraint in place: ``connections``
is rebuilt (a batch migration, reflected, so every column of the live table is kept). It
runs with foreign keys off (:meth:`noclash.db.dialects.sqlite.SQLiteDialect.
migration_connection`): with them on, dropping the old table would cascade into every
conversation and message. ``conversations`` and ``messages`` are not rebuilt, so the
triggers of migrations 0002 and 0003 stay as they are. On PostgreSQL each change is one
statement.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"

PLATFORMS = "'messenger', 'instagram', 'telegram', 'widget'"
CHANNELS_BEFORE = f"channel IN ({PLATFORMS})"
CHANNELS_AFTER = f"channel IN ({PLATFORMS}, 'custom')"
PLATFORM = sa.text("channel <> 'custom'")
CUSTOM = sa.text("channel = 'custom'")
UNCONNECTED_ACTIVE = sa.text("connection_id IS NULL AND status IN ('OPEN', 'SNOOZED')")

# Every active unconnected conversation that another, newer one shares (chatbot, psid) with.
CLOSE_OLDER_DUPLICATES = """
    UPDATE conversations
    SET status = 'CLOSED', closed_at = CURRENT_TIMESTAMP, snoozed_until = NULL
    WHERE connection_id IS NULL AND psid IS NOT NULL AND status IN ('OPEN', 'SNOOZED')
      AND EXISTS (
        SELECT 1 FROM conversations AS newer
        WHERE newer.chatbot_id = conversations.chatbot_id
          AND newer.psid = conversations.psid
          AND newer.connection_id IS NULL
          AND newer.status IN ('OPEN', 'SNOOZED')
          AND newer.id > conversations.id
      )
"""


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_constraint(op.f("uq_connections_channel_external_id"), type_="unique")
        batch.drop_constraint(op.f("ck_connections_channel"), type_="check")
        batch.create_check_constraint(op.f("ck_connections_channel"), CHANNELS_AFTER)
    op.create_index(
        "uq_connections_channel_external_id",
        "connections",
        ["channel", "external_id"],
        unique=True,
        postgresql_where=PLATFORM,
        sqlite_where=PLATFORM,
    )
    op.create_index(
        "uq_connections_chatbot_id_external_id_custom",
        "connections",
        ["chatbot_id", "external_id"],
        unique=True,
        postgresql_where=CUSTOM,
        sqlite_where=CUSTOM,
    )
    op.execute(CLOSE_OLDER_DUPLICATES)
    op.create_index(
        "uq_conversations_active_unconnected_chatbot_id_psid",
        "conversations",
        ["chatbot_id", "psid"],
        unique=True,
        postgresql_where=UNCONNECTED_ACTIVE,
        sqlite_where=UNCONNECTED_ACTIVE,
    )


def downgrade() -> None:
    custom = op.get_bind().execute(
        sa.text("SELECT count(*) FROM connections WHERE channel = 'custom'")
    ).scalar()
    if custom:
        raise RuntimeError(
            f"{custom} custom connections exist; revision 0005 cannot hold them: delete them "
            "(DELETE /api/connections/{id}) before downgrading"
        )
    op.drop_index("uq_conversations_active_unconnected_chatbot_id_psid", "conversations")
    op.drop_index("uq_connections_chatbot_id_external_id_custom", "connections")
    op.drop_index("uq_connections_channel_external_id", "connections")
    with op.batch_alter_table("connections") as batch:
        batch.drop_constraint(op.f("ck_connections_channel"), type_="check")
        batch.create_check_constraint(op.f("ck_connections_channel"), CHANNELS_BEFORE)
        batch.create_unique_constraint(
            op.f("uq_connections_channel_external_id"), ["channel", "external_id"]
        )
