"""chatbots.webhook_events: the event types a chatbot's webhook is sent.

A bot that handles only customer messages was sent every event and had to answer 2xx to
the rest. ``webhook_events`` holds the types its webhook gets, as a bit mask
(``message.created`` 1, ``conversation.created`` 2, ``conversation.status_changed`` 4,
``delivery.failed`` 8: :data:`noclash.chat.events.TYPE_BITS`); NULL, what every chatbot has
after this revision, is every type, as before. A mask, not a list: the statement that
writes an event's webhook delivery checks it with one ``&`` on both databases.

An addition only: a nullable column without a default, added in place on SQLite and
without a rewrite on PostgreSQL. The SQL is written out here, not read from live code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.add_column("chatbots", sa.Column("webhook_events", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("chatbots") as batch:
        batch.drop_column("webhook_events")
