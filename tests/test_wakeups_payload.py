"""The NOTIFY payload of :mod:`noclash.chat.wakeups`: what one process tells the others.

A payload names the chatbots whose events committed (or ``*``: any), and starts with
``+`` when a commit it covers queued a delivery, which wakes the other processes'
dispatchers. Whatever a payload says must read back the same; what cannot be read wakes
every reader (a needless look, never a missed one).
"""

from __future__ import annotations

from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from noclash.chat.wakeups import MAX_PAYLOAD_IDS, parse, payload

ids = st.frozensets(st.uuids(), max_size=MAX_PAYLOAD_IDS)


@given(ids, st.booleans())
def test_a_payload_reads_back_as_written(chatbots: frozenset[UUID], queued: bool):
    text = payload(chatbots, queued)
    assert len(text.encode()) < 4000  # half of PostgreSQL's 8,000-byte limit
    read, flag = parse(text)
    assert flag is queued
    if chatbots:
        assert read == chatbots
    elif queued:
        assert read == frozenset()  # only a delivery queued: no reader to wake
    else:
        assert read is None


@given(st.frozensets(st.uuids(), min_size=MAX_PAYLOAD_IDS + 1, max_size=MAX_PAYLOAD_IDS + 5),
       st.booleans())  # fmt: skip
def test_too_many_chatbots_become_everyone(chatbots: frozenset[UUID], queued: bool):
    assert parse(payload(chatbots, queued)) == (None, queued)
    assert parse(payload(None, queued)) == (None, queued)


def test_what_cannot_be_read_wakes_every_reader():
    assert parse("not,a,uuid") == (None, False)
    assert parse("+garbage") == (None, True)
    assert parse("") == (None, False)
