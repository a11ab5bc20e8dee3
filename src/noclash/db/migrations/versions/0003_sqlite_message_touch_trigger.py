"""SQLite: a message INSERT moves its conversation, so a delivery is one statement.

Every stored message moves its conversation's ``last_message_at`` forward to the message's
time (``sent_at``, else when it was received), never back; an inbound one also wakes a
SNOOZED conversation. On PostgreSQL the inbound statement does this in its CTE, where it
can skip a row that another delivery is touching (see ``noclash.chat.inbound``). SQLite has
no DML in a CTE, so the touch was an UPDATE of its own. The trigger
``messages_move_conversation`` makes the message INSERT do it:

- its WHEN clause leaves a conversation alone when the message neither moves
  ``last_message_at`` forward nor wakes a snooze (an out-of-order delivery, or a new
  conversation's first message, which is inserted with it already set);
- SQLite runs one writer at a time (noclash writes under ``BEGIN IMMEDIATE``), so the
  comparison and the write cannot interleave with another message's. Timestamps are
  stored as fixed-width ISO text, which sorts as time does.

PostgreSQL is unchanged (this revision does nothing there).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:30:00
"""

from __future__ import annotations

from alembic import op

from noclash.db.dialects import dialect_for

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TRIGGER = "messages_move_conversation"

CREATE = f"""
    CREATE TRIGGER {TRIGGER}
    AFTER INSERT ON messages
    BEGIN
        UPDATE conversations SET
            last_message_at = CASE
                WHEN last_message_at IS NULL
                  OR last_message_at < coalesce(NEW.sent_at, NEW.created_at)
                THEN coalesce(NEW.sent_at, NEW.created_at)
                ELSE last_message_at
            END,
            snoozed_until = CASE
                WHEN NEW.direction = 'in' AND status = 'SNOOZED' THEN NULL
                ELSE snoozed_until
            END,
            status = CASE
                WHEN NEW.direction = 'in' AND status = 'SNOOZED' THEN 'OPEN'
                ELSE status
            END
        WHERE id = NEW.conversation_id
          AND (last_message_at IS NULL
               OR last_message_at < coalesce(NEW.sent_at, NEW.created_at)
               OR (NEW.direction = 'in' AND status = 'SNOOZED'));
    END
"""


def upgrade() -> None:
    if dialect_for(op.get_bind()).messages_move_conversations:
        op.execute(CREATE)


def downgrade() -> None:
    if dialect_for(op.get_bind()).messages_move_conversations:
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
