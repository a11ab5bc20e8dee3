"""SQLite: a message INSERT moves its conversation, so a delivery is one statement.

Every stored message moves its conversation's ``last_message_at`` forward to the message's
time (``sent_at``, else when it was received), never back; an inbound one also wakes a
SNOOZED conversation. On PostgreSQL the delivery statement does this in its CTE, where it
can skip a row that another delivery is touching. SQLite has no DML in a CTE; without this
trigger the touch would be an UPDATE of its own after every message INSERT.

The rule's live definition is ``noclash.chat.sql.touch.SQLITE_TRIGGER``. ``CREATE`` below is
a frozen copy, and the revision asks the engine's name rather than a dialect flag: a
migration must do tomorrow exactly what it did when it first ran, whatever the code around
it becomes. ``tests/test_touch_rule.py`` fails when the two texts differ, so a change to the
rule comes with a new migration that replaces the trigger.

PostgreSQL is unchanged (this revision does nothing there).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"

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
    if op.get_bind().dialect.name == "sqlite":
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
