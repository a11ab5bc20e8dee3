"""SQLite: the slug registry is written by triggers, so a slug create is one statement.

On PostgreSQL a conversation and its ``conversation_slugs`` row go in one statement, a
data-modifying CTE. SQLite has no DML in a CTE; without triggers the registry row would
be a second INSERT. Two triggers make the conversation INSERT do it all, and keep the
registry the authority:

- ``conversations_slug_not_former`` (BEFORE INSERT) skips the row, as ``ON CONFLICT DO
  NOTHING`` would, when its slug is already in the registry: a former slug of another
  conversation is never handed out again, and the INSERT returns nothing, so the caller
  tries its next candidate. SQLite runs one writer at a time (noclash writes under
  ``BEGIN IMMEDIATE``), so nothing can register the slug between this check and the row;
- ``conversations_slug_register`` (AFTER INSERT) registers the stored row's slug; the
  registry's primary key still rejects any duplicate.

PostgreSQL is unchanged (this revision does nothing there). The revision asks the engine's
name, not a dialect flag, and holds its trigger text itself: a migration must do tomorrow
exactly what it did when it first ran.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"

TRIGGERS = {
    "conversations_slug_not_former": """
        CREATE TRIGGER conversations_slug_not_former
        BEFORE INSERT ON conversations
        WHEN EXISTS (
            SELECT 1 FROM conversation_slugs
            WHERE chatbot_id = NEW.chatbot_id AND slug = NEW.slug
        )
        BEGIN
            SELECT RAISE(IGNORE);
        END
    """,
    "conversations_slug_register": """
        CREATE TRIGGER conversations_slug_register
        AFTER INSERT ON conversations
        BEGIN
            INSERT INTO conversation_slugs (chatbot_id, slug, conversation_id, created_at)
            VALUES (NEW.chatbot_id, NEW.slug, NEW.id, NEW.created_at);
        END
    """,
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for ddl in TRIGGERS.values():
        op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
