"""initial schema: users, chatbots, connections, conversations, slugs, messages, sessions,
idempotency keys.

Every uniqueness rule is created here, in the database: UUIDv4 public tokens and session
ids with a server default on PostgreSQL (gen_random_uuid()), the partial unique index for
one active conversation per (connection, psid), and the dedupe key of messages.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _uuid4_default() -> sa.TextClause | None:
    """gen_random_uuid() on PostgreSQL; on SQLite the app makes UUIDv4 values. The engine's
    name, not a dialect flag: a migration must do tomorrow what it did when it first ran."""
    if op.get_bind().dialect.name == "postgresql":
        return sa.text("gen_random_uuid()")
    return None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", sa.JSON(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("scope", "key", name=op.f("uq_idempotency_keys_scope_key")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_users_token_hash")),
    )
    op.create_table(
        "chatbots",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("public_token", sa.Uuid(), server_default=_uuid4_default(), nullable=False),
        sa.Column("require_auth", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("slack_channel_id", sa.String(length=200), nullable=True),
        sa.Column("asana_project_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_chatbots_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chatbots")),
        sa.UniqueConstraint("public_token", name=op.f("uq_chatbots_public_token")),
    )
    with op.batch_alter_table("chatbots", schema=None) as batch_op:
        batch_op.create_index("ix_chatbots_owner_id_id", ["owner_id", "id"], unique=False)

    op.create_table(
        "connections",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("chatbot_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("secret", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "channel IN ('messenger', 'instagram', 'telegram', 'widget')",
            name=op.f("ck_connections_channel"),
        ),
        sa.ForeignKeyConstraint(
            ["chatbot_id"],
            ["chatbots.id"],
            name=op.f("fk_connections_chatbot_id_chatbots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
        sa.UniqueConstraint(
            "channel", "external_id", name=op.f("uq_connections_channel_external_id")
        ),
    )
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.create_index("ix_connections_chatbot_id_id", ["chatbot_id", "id"], unique=False)

    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("chatbot_id", sa.Uuid(), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=True),
        sa.Column("psid", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=10), server_default=sa.text("'OPEN'"), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('OPEN', 'SNOOZED', 'CLOSED')", name=op.f("ck_conversations_status")
        ),
        sa.ForeignKeyConstraint(
            ["chatbot_id"],
            ["chatbots.id"],
            name=op.f("fk_conversations_chatbot_id_chatbots"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_conversations_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint("chatbot_id", "slug", name=op.f("uq_conversations_chatbot_id_slug")),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index("ix_conversations_chatbot_id_id", ["chatbot_id", "id"], unique=False)
        batch_op.create_index(
            "ix_conversations_connection_id_psid_status",
            ["connection_id", "psid", "status"],
            unique=False,
        )
        batch_op.create_index(
            "ix_conversations_connection_id_status_last_message_at",
            ["connection_id", "status", "last_message_at"],
            unique=False,
        )
        batch_op.create_index(
            "uq_conversations_active_connection_id_psid",
            ["connection_id", "psid"],
            unique=True,
            postgresql_where=sa.text("status IN ('OPEN', 'SNOOZED')"),
            sqlite_where=sa.text("status IN ('OPEN', 'SNOOZED')"),
        )

    op.create_table(
        "conversation_slugs",
        sa.Column("chatbot_id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["chatbot_id"],
            ["chatbots.id"],
            name=op.f("fk_conversation_slugs_chatbot_id_chatbots"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_slugs_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("chatbot_id", "slug", name=op.f("pk_conversation_slugs")),
    )
    with op.batch_alter_table("conversation_slugs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversation_slugs_conversation_id", ["conversation_id"], unique=False
        )

    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=True),
        sa.Column("platform_message_id", sa.String(length=300), nullable=True),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("direction IN ('in', 'out')", name=op.f("ck_messages_direction")),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_messages_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "connection_id",
            "platform_message_id",
            name=op.f("uq_messages_connection_id_platform_message_id"),
        ),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_conversation_id_id", ["conversation_id", "id"], unique=False
        )

    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), server_default=_uuid4_default(), nullable=False),
        sa.Column("chatbot_id", sa.Uuid(), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["chatbot_id"],
            ["chatbots.id"],
            name=op.f("fk_sessions_chatbot_id_chatbots"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_sessions_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_sessions_conversation_id_conversations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("session_id", name=op.f("uq_sessions_session_id")),
    )


def downgrade() -> None:
    op.drop_table("sessions")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_conversation_id_id")

    op.drop_table("messages")
    with op.batch_alter_table("conversation_slugs", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_slugs_conversation_id")

    op.drop_table("conversation_slugs")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_conversations_active_connection_id_psid",
            postgresql_where=sa.text("status IN ('OPEN', 'SNOOZED')"),
            sqlite_where=sa.text("status IN ('OPEN', 'SNOOZED')"),
        )
        batch_op.drop_index("ix_conversations_connection_id_status_last_message_at")
        batch_op.drop_index("ix_conversations_connection_id_psid_status")
        batch_op.drop_index("ix_conversations_chatbot_id_id")

    op.drop_table("conversations")
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_index("ix_connections_chatbot_id_id")

    op.drop_table("connections")
    with op.batch_alter_table("chatbots", schema=None) as batch_op:
        batch_op.drop_index("ix_chatbots_owner_id_id")

    op.drop_table("chatbots")
    op.drop_table("users")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_expires_at")

    op.drop_table("idempotency_keys")
