"""A hypothesis state machine over the lifecycle: inbound, close, snooze, reopen, reply.

After every step the database must satisfy the invariants, and agree with a simple model:
at most one active conversation per customer, every distinct platform message id stored
exactly once, each conversation in the status the model predicts.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from noclash.chat import lifecycle
from noclash.chat.errors import Conflict
from noclash.chat.inbound import receive_message
from noclash.chat.messages import send_reply
from noclash.db.tables import ACTIVE_STATUSES, conversations, messages
from tests.support.factories import make_chatbot, make_connection, make_user

PSIDS = ("alice", "bob")
# Mostly one customer, so close → new message → reopen-the-old-one sequences come up often.
PSIDS_WEIGHTED = ("alice", "alice", "alice", "bob")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def lifecycle_machine(engine):
    class Lifecycle(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.owner = make_user(engine)
            bot = make_chatbot(engine, owner_id=self.owner.id)
            self.connection = make_connection(engine, bot.id)
            self.status: dict = {}  # conversation id -> status (the model)
            self.psid_of: dict = {}
            self.mids: dict = defaultdict(dict)  # psid -> {mid: conversation id}
            self.replies = 0
            self.counter = 0
            self.latest: dict = {}  # conversation id -> newest sent_at
            self.wall_clock: set = set()  # conversations whose last message is a reply

        def _active(self, psid):
            found = [c for c, s in self.status.items() if s != "CLOSED" and self.psid_of[c] == psid]
            assert len(found) <= 1
            return found[0] if found else None

        def _pick(self, index):
            ids = sorted(self.status)
            return ids[index % len(ids)]

        @rule(
            psid=st.sampled_from(PSIDS_WEIGHTED),
            redeliver=st.booleans(),
            minutes=st.integers(0, 60),
        )
        def inbound(self, psid, redeliver, minutes):
            known = self.mids[psid]
            if redeliver and known:
                mid = sorted(known)[minutes % len(known)]
            else:
                self.counter += 1
                mid = f"mid-{self.counter}"
            sent_at = T0 + timedelta(minutes=minutes)
            active = self._active(psid)
            result = receive_message(
                engine, connection_id=self.connection.id, psid=psid,
                platform_message_id=mid, text="hi", sent_at=sent_at,
            )  # fmt: skip
            if mid in known:
                assert result.duplicate and result.conversation_id == known[mid]
                event("redelivery")
                return
            assert not result.duplicate
            if active is not None:
                assert result.conversation_id == active and not result.created_conversation
            else:
                assert result.created_conversation
                self.psid_of[result.conversation_id] = psid
            self.status[result.conversation_id] = "OPEN"
            known[mid] = result.conversation_id
            cid = result.conversation_id
            self.latest[cid] = max(self.latest.get(cid, sent_at), sent_at)

        @precondition(lambda self: self.status)
        @rule(index=st.integers(0, 50))
        def close(self, index):
            cid = self._pick(index)
            with engine.begin() as conn:
                row = lifecycle.close(conn, cid, owner_id=self.owner.id)
            assert row.status == "CLOSED"
            self.status[cid] = "CLOSED"

        @precondition(lambda self: self.status)
        @rule(index=st.integers(0, 50))
        def snooze(self, index):
            cid = self._pick(index)
            try:
                with engine.begin() as conn:
                    lifecycle.snooze(conn, cid, owner_id=self.owner.id)
            except Conflict:
                assert self.status[cid] == "CLOSED"
            else:
                assert self.status[cid] != "CLOSED"
                self.status[cid] = "SNOOZED"

        def _reopen(self, cid):
            other = self._active(self.psid_of[cid])
            try:
                with engine.begin() as conn:
                    lifecycle.reopen(conn, cid, owner_id=self.owner.id)
            except Conflict as exc:
                assert self.status[cid] == "CLOSED" and other not in (None, cid)
                assert exc.extra["conversation_id"] == str(other)
                event("reopen refused: another conversation is active")
            else:
                assert other in (None, cid)
                self.status[cid] = "OPEN"

        @precondition(lambda self: self.status)
        @rule(index=st.integers(0, 50))
        def reopen(self, index):
            self._reopen(self._pick(index))

        @precondition(lambda self: "CLOSED" in self.status.values())
        @rule(index=st.integers(0, 50))
        def reopen_a_closed_one(self, index):
            closed = sorted(c for c, s in self.status.items() if s == "CLOSED")
            self._reopen(closed[index % len(closed)])

        @precondition(lambda self: self.status)
        @rule(index=st.integers(0, 50))
        def reply(self, index):
            cid = self._pick(index)
            try:
                with engine.begin() as conn:
                    send_reply(conn, cid, owner_id=self.owner.id, text="agent")
            except Conflict:
                assert self.status[cid] == "CLOSED"
            else:
                assert self.status[cid] != "CLOSED"
                self.replies += 1
                self.wall_clock.add(cid)  # a reply is stamped with the wall clock

        @invariant()
        def database_matches_model(self):
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(conversations).where(
                        conversations.c.connection_id == self.connection.id
                    )
                ).all()
                stored = conn.execute(
                    sa.select(messages.c.platform_message_id, messages.c.direction).where(
                        messages.c.conversation_id.in_([r.id for r in rows] or [None])
                    )
                ).all()
            for psid in PSIDS:
                active = [r for r in rows if r.psid == psid and r.status in ACTIVE_STATUSES]
                assert len(active) <= 1
            assert {r.id: r.status for r in rows} == self.status
            inbound_ids = [m.platform_message_id for m in stored if m.direction == "in"]
            assert len(inbound_ids) == len(set(inbound_ids))
            assert set(inbound_ids) == {mid for ms in self.mids.values() for mid in ms}
            assert sum(m.direction == "out" for m in stored) == self.replies
            for row in rows:
                if row.id in self.latest and row.id not in self.wall_clock:
                    assert row.last_message_at == self.latest[row.id]

    return Lifecycle


def test_lifecycle_state_machine(engine):
    run_state_machine_as_test(
        lifecycle_machine(engine),
        settings=settings(max_examples=25, stateful_step_count=15, deadline=None, database=None),
    )
