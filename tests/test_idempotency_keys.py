"""The idempotency primitive on both dialects: claim, replay, mismatch, expiry, takeover."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from noclash.db.tables import idempotency_keys
from noclash.db.types import utcnow
from noclash.unique import idempotency as keys

TTL = timedelta(hours=24)
RESPONSE = keys.StoredResponse(201, [("content-type", "application/json")], b'{"id": 1}')


def _claim(engine, *, key="k1", scope="user:a", body=b"{}", now=None, **kwargs):
    with engine.begin() as conn:
        return keys.claim(
            conn,
            idempotency_keys,
            scope=scope,
            key=key,
            method="POST",
            path="/api/things",
            request_hash=keys.request_hash("POST", "/api/things", body),
            ttl=kwargs.pop("ttl", TTL),
            now=now,
            **kwargs,
        )


def _claim_in(conn, *, wait=None):
    """Claim the tests' key in the caller's transaction (the single-transaction protocol)."""
    return keys.claim(
        conn,
        idempotency_keys,
        scope="user:a",
        key="k1",
        method="POST",
        path="/api/things",
        request_hash=keys.request_hash("POST", "/api/things", b"{}"),
        ttl=TTL,
        wait=wait,
    )


def _complete(engine, outcome, response=RESPONSE):
    with engine.begin() as conn:
        return keys.complete(conn, idempotency_keys, outcome.claim_id, response)


def _rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(idempotency_keys)).scalar()


def test_first_claims_then_in_progress_then_replay(engine):
    first = _claim(engine)
    assert isinstance(first, keys.Claimed)
    assert isinstance(_claim(engine), keys.InProgress)
    assert _complete(engine, first)
    again = _claim(engine)
    assert isinstance(again, keys.Replay)
    assert again.response == RESPONSE
    assert _rows(engine) == 1


def test_same_key_other_request_is_a_mismatch(engine):
    _complete(engine, _claim(engine, body=b'{"name": "a"}'))
    outcome = _claim(engine, body=b'{"name": "b"}')
    assert outcome == keys.Mismatch("POST", "/api/things")


def test_json_body_is_compared_canonically():
    a = keys.request_hash("POST", "/p", b'{"a": 1, "b": [1, 2]}')
    b = keys.request_hash("POST", "/p", b'{"b":[1,2],"a":1}')
    assert a == b
    assert a != keys.request_hash("POST", "/p", b'{"a": 2, "b": [1, 2]}')
    assert a != keys.request_hash("POST", "/q", b'{"a": 1, "b": [1, 2]}')
    assert keys.request_hash("POST", "/p", b"not json") != keys.request_hash("POST", "/p", b"")


def test_keys_are_scoped(engine):
    assert isinstance(_claim(engine, scope="user:a"), keys.Claimed)
    assert isinstance(_claim(engine, scope="user:b"), keys.Claimed)
    assert _rows(engine) == 2


def test_expired_key_is_replaced_and_runs_anew(engine):
    start = utcnow()
    first = _claim(engine, now=start, ttl=timedelta(seconds=10))
    _complete(engine, first)
    later = start + timedelta(seconds=11)
    second = _claim(engine, now=later, body=b'{"other": true}')
    assert isinstance(second, keys.Claimed) and second.claim_id != first.claim_id
    assert _rows(engine) == 1


def test_stale_claim_is_taken_over_once(engine):
    """A claim committed before its work (a caller using the module that way) whose
    request died is taken over after the lease; the dead one cannot complete afterwards,
    so a late finisher never overwrites the new response."""
    start = utcnow()
    dead = _claim(engine, now=start)
    lease = timedelta(seconds=30)
    assert isinstance(
        _claim(engine, now=start + timedelta(seconds=29), lease=lease), keys.InProgress
    )
    taker = _claim(engine, now=start + timedelta(seconds=31), lease=lease)
    assert isinstance(taker, keys.Claimed)
    assert not _complete(engine, dead)
    assert _complete(engine, taker)


def test_a_rolled_back_claim_leaves_the_key_free(engine):
    """The claim lives in the work's transaction: rolling it back frees the key at once."""
    with engine.connect() as conn:
        conn.begin()
        first = _claim_in(conn)
        assert isinstance(first, keys.Claimed)
        conn.rollback()
    assert _rows(engine) == 0
    assert isinstance(_claim(engine), keys.Claimed)


def test_purge_expired(engine):
    start = utcnow()
    _claim(engine, key="old", now=start - timedelta(days=2))
    _claim(engine, key="new", now=start)
    with engine.begin() as conn:
        assert keys.purge_expired(conn, idempotency_keys, now=start) == 1
    assert _rows(engine) == 1


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\there", "é"])
def test_bad_keys_are_refused(bad):
    with pytest.raises(keys.InvalidIdempotencyKey):
        keys.check_key(bad)


def test_concurrent_claims_in_one_transaction_each_run_once(engine):
    """20 threads held at a barrier each run claim, work and complete in ONE transaction:
    exactly one runs the work, and every other one waits for its commit and replays it."""
    n = 20
    barrier = threading.Barrier(n)
    ran = []

    def run(i: int):
        with engine.connect() as conn:
            barrier.wait()
            conn.begin()
            outcome = _claim_in(conn, wait=timedelta(seconds=30))
            if isinstance(outcome, keys.Claimed):
                ran.append(i)
                threading.Event().wait(0.2)  # the work: duplicates arrive meanwhile
                body = f'{{"ran": {i}}}'.encode()
                answer = keys.StoredResponse(201, [], body)
                keys.complete(conn, idempotency_keys, outcome.claim_id, answer)
                conn.commit()
            else:
                conn.rollback()
            return outcome

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(run, range(n)))
    assert len(ran) == 1
    replays = [o for o in outcomes if isinstance(o, keys.Replay)]
    assert len(replays) == n - 1
    assert {o.response.body for o in replays} == {f'{{"ran": {ran[0]}}}'.encode()}


def test_concurrent_takeovers_of_an_expired_key_have_one_winner(engine):
    start = utcnow()
    _complete(engine, _claim(engine, now=start, ttl=timedelta(seconds=1)))
    n = 12
    barrier = threading.Barrier(n)
    later = start + timedelta(seconds=5)

    def run(_: int):
        barrier.wait()
        return _claim(engine, now=later)

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(run, range(n)))
    assert sum(isinstance(o, keys.Claimed) for o in outcomes) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_wait_past_its_bound_is_in_progress(engine):
    """PostgreSQL: a claim waits on the holder's uncommitted index entry for at most
    ``wait`` (lock_timeout), then reports InProgress; the holder is unaffected."""
    import time

    with engine.connect() as holder, engine.connect() as other:
        holder.begin()
        held = _claim_in(holder)
        assert isinstance(held, keys.Claimed)
        other.begin()
        started = time.monotonic()
        outcome = _claim_in(other, wait=timedelta(seconds=0.2))
        assert outcome == keys.InProgress(None)
        assert 0.2 <= time.monotonic() - started < 5
        other.rollback()
        keys.complete(holder, idempotency_keys, held.claim_id, RESPONSE)
        holder.commit()
    assert isinstance(_claim(engine), keys.Replay)
