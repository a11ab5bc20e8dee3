"""The migrated schema is the declared one, and the rules live in the database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from noclash.db.migrate import current_revision, head_revision, is_at_head
from noclash.db.tables import metadata


def test_migrations_create_exactly_the_declared_tables(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    # FetchedValue server defaults (PostgreSQL's gen_random_uuid()) are not compared.
    assert diff == []
    assert is_at_head(engine) and current_revision(engine) == head_revision()


def test_required_table_names(engine):
    names = set(sa.inspect(engine).get_table_names())
    assert {
        "users",
        "chatbots",
        "connections",
        "conversations",
        "messages",
        "idempotency_keys",
    } <= names


def test_no_integer_sequences(engine):
    inspector = sa.inspect(engine)
    for table in metadata.tables.values():
        for column in inspector.get_columns(table.name):
            if column["name"] == "id":
                assert not isinstance(column["type"], sa.Integer), table.name


def test_postgresql_public_token_is_uuid_with_server_default(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("catalog check for PostgreSQL")
    with engine.connect() as conn:
        column = conn.execute(
            sa.text(
                """
                SELECT data_type, is_nullable, column_default
                FROM information_schema.columns
                WHERE table_name = 'chatbots' AND column_name = 'public_token'
                """
            )
        ).one()
        indexes = conn.execute(
            sa.text(
                """
                SELECT i.indisunique, pg_get_indexdef(i.indexrelid)
                FROM pg_index i
                JOIN pg_class t ON t.oid = i.indrelid
                JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey)
                WHERE t.relname = 'chatbots' AND a.attname = 'public_token'
                """
            )
        ).all()
    assert column.data_type == "uuid"
    assert column.is_nullable == "NO"
    assert column.column_default == "gen_random_uuid()"
    assert any(unique and "(public_token)" in ddl for unique, ddl in indexes)


def test_sqlite_runs_in_wal_with_a_busy_timeout(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_registers_slugs_by_trigger(engine):
    """SQLite has no DML in a CTE: migration 0002's triggers write the slug registry."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite triggers")
    with engine.connect() as conn:
        names = set(
            conn.exec_driver_sql(
                "SELECT name FROM sqlite_master "
                "WHERE type = 'trigger' AND tbl_name = 'conversations'"
            ).scalars()
        )
    assert names == {"conversations_slug_not_former", "conversations_slug_register"}


def test_sqlite_moves_conversations_by_trigger(engine):
    """Migration 0003: any message INSERT, by noclash or not, moves its conversation's
    last_message_at forward (never back) and an inbound one wakes a snooze."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite triggers")
    from datetime import UTC, datetime, timedelta

    from noclash.chat.conversations import insert_conversation
    from noclash.db.tables import conversations, messages
    from noclash.unique import uuid7
    from tests.support.factories import make_chatbot

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    bot = make_chatbot(engine)
    with engine.begin() as conn:
        conv, _ = insert_conversation(conn, chatbot_id=bot.id, status="SNOOZED")

    def insert(direction, sent_at):
        with engine.begin() as conn:
            conn.execute(
                sa.insert(messages).values(
                    id=uuid7(), conversation_id=conv.id, direction=direction, text="x",
                    sent_at=sent_at, created_at=t0 + timedelta(days=1),
                )
            )
            return conn.execute(
                sa.select(conversations.c.status, conversations.c.last_message_at)
                .where(conversations.c.id == conv.id)
            ).one()

    assert tuple(insert("out", t0 + timedelta(minutes=5))) == ("SNOOZED", t0 + timedelta(minutes=5))
    assert tuple(insert("out", t0)) == ("SNOOZED", t0 + timedelta(minutes=5))  # never back
    assert tuple(insert("in", t0 + timedelta(minutes=1))) == ("OPEN", t0 + timedelta(minutes=5))
    assert tuple(insert("in", None)) == ("OPEN", t0 + timedelta(days=1))  # received time


def test_partial_index_on_both_dialects(engine):
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master "
                "WHERE name = 'uq_conversations_active_connection_id_psid'"
            ).scalar()
        else:
            ddl = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes "
                "WHERE indexname = 'uq_conversations_active_connection_id_psid'"
            ).scalar()
    assert "UNIQUE" in ddl.upper() and "WHERE" in ddl.upper() and "SNOOZED" in ddl


def test_sqlite_readers_do_not_queue_behind_a_writer(engine):
    """A write transaction holds SQLite's lock; a read-only one still reads at once."""
    from noclash.db.engine import read_only

    writer = engine.connect()
    writer.begin()
    writer.exec_driver_sql("DELETE FROM users")
    try:
        with read_only(engine).connect() as reader:
            assert reader.execute(sa.text("SELECT count(*) FROM users")).scalar() == 0
    finally:
        writer.rollback()
        writer.close()
