"""The touch rule (:mod:`noclash.chat.sql.touch`) has two forms, and they agree.

SQLite moves a conversation by the trigger a message INSERT fires; PostgreSQL by the
UPDATE built from the rule's SQLAlchemy expressions. One table of cases (the message
earlier or later than ``last_message_at``, or no ``last_message_at`` yet; OPEN, SNOOZED
or CLOSED; inbound or outbound; timed by ``sent_at`` or by ``created_at``) runs on real
SQLite and real PostgreSQL, first against each form directly, then, for the cases the
product can reach, through ``receive_message`` and ``send_reply``. The migration that
creates the trigger holds a frozen copy of its text, which must equal the live one.
"""

from __future__ import annotations

import importlib.util
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import noclash.db.migrations
from noclash.chat.conversations import insert_conversation
from noclash.chat.inbound import receive_message
from noclash.chat.messages import send_reply
from noclash.chat.sql import sql_for
from noclash.chat.sql.touch import SQLITE_TRIGGER, TRIGGER, needs_touch, touch
from noclash.db.tables import Direction, Status, chatbots, conversations, messages
from noclash.unique import uuid7
from tests.support.factories import make_chatbot, make_connection

MESSAGE_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SNOOZED_UNTIL = MESSAGE_AT + timedelta(days=1)
LAST = {
    "no last_message_at": None,
    "message is later": MESSAGE_AT - timedelta(hours=1),
    "message is earlier": MESSAGE_AT + timedelta(hours=1),
}
CASES = list(itertools.product(LAST, Status, Direction, ["sent_at", "created_at"]))


def _expected(last_case: str, status: Status, direction: Direction):
    """The rule in Python: (last_message_at, status, snoozed_until) after the message."""
    last = LAST[last_case]
    moved = MESSAGE_AT if last is None or last < MESSAGE_AT else last
    if direction == Direction.IN and status == Status.SNOOZED:
        return moved, Status.OPEN, None
    return moved, status, SNOOZED_UNTIL if status == Status.SNOOZED else None


def _case_id(case) -> str:
    last, status, direction, timed_by = case
    return f"{last}-{status}-{direction}-{timed_by}".replace(" ", "_")


def _state(conn, conversation_id):
    row = conn.execute(
        sa.select(
            conversations.c.last_message_at, conversations.c.status, conversations.c.snoozed_until
        ).where(conversations.c.id == conversation_id)
    ).one()
    return tuple(row)


def _set_state(conn, conversation_id, last_case: str, status: Status) -> None:
    conn.execute(
        sa.update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(
            last_message_at=LAST[last_case],
            status=status,
            snoozed_until=SNOOZED_UNTIL if status == Status.SNOOZED else None,
            closed_at=MESSAGE_AT if status == Status.CLOSED else None,
        )
    )


@pytest.fixture
def conversation_id(engine):
    bot = make_chatbot(engine)
    with engine.begin() as conn:
        row, _created = insert_conversation(conn, chatbot_id=bot.id, title="touch")
    return row.id


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_each_form_of_the_rule_moves_the_conversation_alike(engine, conversation_id, case):
    """Store a message row; SQLite's trigger moves the conversation, PostgreSQL's UPDATE
    (the reply's touch, and the delivery's SET clause with a snooze to wake) does there.
    ``needs_touch``, which decides whether PostgreSQL's delivery touches at all, is true
    exactly when the inbound message changes the row."""
    last_case, status, direction, timed_by = case
    sent_at = MESSAGE_AT if timed_by == "sent_at" else None
    created_at = MESSAGE_AT if timed_by == "created_at" else MESSAGE_AT - timedelta(days=9)
    sql = sql_for(engine)
    with engine.begin() as conn:
        _set_state(conn, conversation_id, last_case, status)
        before = _state(conn, conversation_id)
        predicted = conn.execute(
            sa.select(needs_touch(conversations)).where(conversations.c.id == conversation_id),
            {"at": MESSAGE_AT},
        ).scalar_one()
        conn.execute(
            sa.insert(messages).values(
                id=uuid7(), conversation_id=conversation_id, connection_id=None,
                platform_message_id=None, direction=direction, text="hi",
                sent_at=sent_at, created_at=created_at,
            )
        )  # fmt: skip
        if not sql.messages_move_conversations:
            touch(conn, conversation_id, MESSAGE_AT, reopen_snoozed=direction == Direction.IN)
        after = _state(conn, conversation_id)
    assert after == _expected(last_case, status, direction)
    if direction == Direction.IN:
        assert bool(predicted) == (after != before)


REACHABLE = [
    (last, status, direction)
    for last, status, direction, _timed_by in CASES
    if status != Status.CLOSED and _timed_by == "sent_at"
]


@pytest.mark.parametrize("case", REACHABLE, ids=lambda c: _case_id((*c, "sent_at")))
def test_deliveries_and_replies_follow_the_rule(engine, case):
    """The same cases through the product: a customer's message into their active
    conversation (``receive_message``), an agent's reply (``send_reply``)."""
    last_case, status, direction = case
    connection = make_connection(engine, make_chatbot(engine).id)
    first = receive_message(
        engine, connection_id=connection.id, psid="p1", platform_message_id="m0", text="hello"
    )
    with engine.begin() as conn:
        _set_state(conn, first.conversation_id, last_case, status)
        owner_id = conn.execute(
            sa.select(chatbots.c.owner_id).where(chatbots.c.id == connection.chatbot_id)
        ).scalar_one()
    if direction == Direction.IN:
        got = receive_message(
            engine, connection_id=connection.id, psid="p1", platform_message_id="m1",
            text="again", sent_at=MESSAGE_AT,
        )  # fmt: skip
        assert got.conversation_id == first.conversation_id and not got.created_conversation
    else:
        with engine.begin() as conn:
            send_reply(conn, first.conversation_id, owner_id=owner_id, text="on it", now=MESSAGE_AT)
    with engine.connect() as conn:
        assert _state(conn, first.conversation_id) == _expected(last_case, status, direction)


def _migration(revision: str):
    versions = Path(noclash.db.migrations.__file__).parent / "versions"
    (path,) = versions.glob(f"{revision}_*.py")
    spec = importlib.util.spec_from_file_location(f"migration_{revision}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_holds_the_live_trigger_text():
    """A change to the rule must come with a new migration replacing the trigger: the
    frozen copy in 0003 may not drift from the live text."""
    migration = _migration("0003")
    assert migration.TRIGGER == TRIGGER
    assert migration.CREATE == SQLITE_TRIGGER


def test_a_migrated_sqlite_database_has_the_live_trigger(engine):
    if not sql_for(engine).messages_move_conversations:
        pytest.skip("PostgreSQL touches in its statements: no trigger")
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = :n"),
            {"n": TRIGGER},
        ).scalar_one()
    assert " ".join(stored.split()) == " ".join(SQLITE_TRIGGER.split())
