"""the outbox and the events: deliveries to platforms and to bots, credentials, events.

- ``connections.access_token``: the platform credential replies are sent with (nullable:
  a connection may only receive);
- ``chatbots.webhook_url`` and ``chatbots.webhook_secret``: where a chatbot's events are
  POSTed and the secret they are signed with; ``chatbots.allowed_origins``: the web
  origins whose pages may use its widget API (a JSON list, NULL for any);
- ``events``: what happened, once (``uq_events_type_subject``), with ``seq`` given after
  commit (``uq_events_seq``; ``ix_events_unsequenced`` finds the rows still without one);
- ``deliveries``: one row per outgoing message per platform
  (``uq_deliveries_message_id_destination``) or per event per webhook
  (``uq_deliveries_event_id_destination``), written in the same transaction and claimed
  by dispatchers. ``ix_deliveries_due`` is partial (pending rows only), so the history
  costs the dispatcher's scan nothing;
- ``ix_conversations_snoozed_until`` (partial, snoozed rows): the dispatcher reopens due
  snoozes every second.

Every change is an addition: SQLite adds the columns in place (no table rebuild), and
nothing existing changes. The SQL is written out here, not read from live code, so this
revision does tomorrow what it does today.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"

PENDING = sa.text("status IN ('queued', 'sending')")
SNOOZED = sa.text("status = 'SNOOZED'")
UNSEQUENCED = sa.text("seq IS NULL")
STATUSES = "status IN ('queued', 'sending', 'sent', 'failed', 'unknown')"
ONE_SUBJECT = "(message_id IS NULL) <> (event_id IS NULL)"


def _fk(column: str, table: str, ondelete: str, source: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{table}.id"], name=op.f(f"fk_{source}_{column}_{table}"), ondelete=ondelete
    )


def upgrade() -> None:
    op.add_column("connections", sa.Column("access_token", sa.String(length=1000)))
    op.add_column("chatbots", sa.Column("webhook_url", sa.String(length=2000)))
    op.add_column("chatbots", sa.Column("webhook_secret", sa.String(length=100)))
    op.add_column("chatbots", sa.Column("allowed_origins", sa.JSON()))
    op.create_table(
        "events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger()),
        sa.Column("chatbot_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid()),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("chatbot_id", "chatbots", "CASCADE", "events"),
        _fk("conversation_id", "conversations", "CASCADE", "events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("type", "subject", name=op.f("uq_events_type_subject")),
        sa.UniqueConstraint("seq", name=op.f("uq_events_seq")),
    )
    op.create_index(
        "ix_events_unsequenced",
        "events",
        ["id"],
        postgresql_where=UNSEQUENCED,
        sqlite_where=UNSEQUENCED,
    )
    op.create_index("ix_events_chatbot_id_seq", "events", ["chatbot_id", "seq"])
    op.create_index("ix_events_conversation_id_seq", "events", ["conversation_id", "seq"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid()),
        sa.Column("event_id", sa.Uuid()),
        sa.Column("destination", sa.String(length=20), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("connection_id", sa.Uuid()),
        sa.Column("recipient", sa.String(length=200)),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.Uuid()),
        sa.Column("last_error", sa.Text()),
        sa.Column("platform_message_id", sa.String(length=300)),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(STATUSES, name=op.f("ck_deliveries_status")),
        sa.CheckConstraint(ONE_SUBJECT, name=op.f("ck_deliveries_one_subject")),
        _fk("message_id", "messages", "CASCADE", "deliveries"),
        _fk("event_id", "events", "CASCADE", "deliveries"),
        _fk("conversation_id", "conversations", "CASCADE", "deliveries"),
        _fk("connection_id", "connections", "SET NULL", "deliveries"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "message_id", "destination", name=op.f("uq_deliveries_message_id_destination")
        ),
        sa.UniqueConstraint(
            "event_id", "destination", name=op.f("uq_deliveries_event_id_destination")
        ),
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index("ix_deliveries_conversation_id_id", "deliveries", ["conversation_id", "id"])
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
    op.drop_table("events")
    with op.batch_alter_table("chatbots") as batch:
        batch.drop_column("allowed_origins")
        batch.drop_column("webhook_secret")
        batch.drop_column("webhook_url")
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("access_token")
