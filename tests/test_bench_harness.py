"""The benchmark harness's arithmetic and accounting, without timing anything that matters.

The smoke test runs every scenario; these pin what the figures mean: paired ratios, the
fixed measuring window of a round, and the op-by-op interleaving of one-writer cases.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    COUNTER,
    Contender,
    paired_ratio,
    paired_ratios,
    quartiles,
    run_interleaved,
    run_threads,
)
from bench.overhead import measure_sqlite_event_writes  # noqa: E402


def test_ratios_pair_rounds_instead_of_dividing_medians():
    # The machine got twice as slow in the middle round: a ratio of medians would say
    # 0.75, the paired rounds say what happened in each, 0.5.
    contender = [50.0, 25.0, 50.0]
    noclash = [100.0, 50.0, 100.0]
    assert paired_ratios(contender, noclash) == [0.5, 0.5, 0.5]
    assert paired_ratio(contender, noclash) == 0.5
    assert paired_ratio([1.0, 2.0], [0.0, 4.0]) == 0.5  # a round where noclash did nothing
    assert paired_ratio([], []) is None


def test_quartiles_need_four_rounds():
    assert quartiles([1.0, 2.0, 3.0]) is None
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)


def test_a_round_is_a_fixed_window_and_late_ops_do_not_count():
    """Ops still running at the deadline finish, but outside the window: the round's
    length stays ``seconds`` however long the last op takes."""

    def quick_then_slow(_w: int, seq: int) -> None:
        time.sleep(0.01 if seq == 0 else 0.2)

    result = run_threads(quick_then_slow, writers=3, seconds=0.05, max_ops=1000)
    assert (result.ok, result.late, result.errors) == (3, 3, 0)
    assert result.elapsed == pytest.approx(0.05)


def test_a_window_that_holds_no_success_stretches_to_the_first():
    """A loaded machine and a short window: every op ends after the deadline. The first
    success is measured (the window ends with it), the others are late."""

    def slow(_w: int, _seq: int) -> None:
        time.sleep(0.2)

    result = run_threads(slow, writers=3, seconds=0.05, max_ops=1000)
    assert (result.ok, result.late, result.errors) == (1, 2, 0)
    assert 0.2 <= result.elapsed < 0.4
    assert len(result.latencies_ns) == 1


def test_an_op_budget_ends_the_window_with_the_last_op():
    result = run_threads(lambda _w, _s: None, writers=2, seconds=30.0, max_ops=10)
    assert (result.ok, result.late) == (10, 0)
    assert result.elapsed < 30.0


def test_interleaving_counts_each_contenders_ops_and_statements(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'h.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")

    def statements(n: int):
        def op(_w: int, _seq: int) -> None:
            with engine.begin() as conn:
                for _ in range(n):
                    conn.exec_driver_sql("INSERT INTO t VALUES (1)")

        return op

    def failing(_w: int, _seq: int) -> None:
        raise RuntimeError("lost a race")

    contenders = [
        Contender("two", "noclash", statements(2), engines=[engine]),
        Contender("one", "limit", statements(1), engines=[engine]),
        Contender("err", "seed", failing),
    ]
    COUNTER.attach(engine)
    try:
        got = run_interleaved(contenders, seconds=30.0, max_ops=25)
    finally:
        engine.dispose()
    assert {name: (r.ok, r.errors) for name, r in got.items()} == {
        "two": (25, 0), "one": (25, 0), "err": (0, 25),
    }  # fmt: skip
    assert (got["two"].statements, got["one"].statements, got["err"].statements) == (50, 25, None)
    assert all(r.elapsed > 0 for r in got.values())


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_each_dispatcher_statement_is_counted_as_what_it_does(dialect: str) -> None:
    """The outbound scenario splits statements by kind from their SQL: each of the
    outbox's statements, as compiled for each database, lands in its own kind."""
    from bench.dispatchers import statement_kind
    from sqlalchemy.dialects import postgresql, sqlite

    from noclash.chat import outbox
    from noclash.db.dialects import APP_DIALECTS
    from noclash.db.prepared import Compiled

    sa_dialect = sqlite.pysqlite.dialect() if dialect == "sqlite" else postgresql.psycopg.dialect()

    def kind(statement) -> str | None:
        return statement_kind(Compiled(statement, sa_dialect).sql)

    assert kind(outbox._claim_statement()) == "claim"
    assert kind(outbox._claimed_events_statement()) == "details"
    if APP_DIALECTS.get(dialect).supports_dml_in_cte:  # the claim that reads its events too
        assert kind(outbox._claim_with_events_statement()) == "claim"
    assert kind(outbox._settle_statement()) == "settle"
    assert kind(outbox._settle_statement().returning(outbox.deliveries.c.id)) == "settle"
    assert kind(outbox._settle_batch_statement()) == "settle"


def test_the_sqlite_event_probe_writes_what_it_times(tmp_path):
    """bench.overhead's event probe: each piece wrote its messages, and the two event
    pieces one message.created per message (the second statement's and the trigger's)."""
    timings = measure_sqlite_event_writes(tmp_path, ops=20)
    assert len(timings) == 3 and all(us > 0 for us in timings.values())
    expected = {"alone": 0, "second": 70, "trigger": 70}  # 50 warm-up calls, 20 timed
    for name, event_rows in expected.items():
        with sqlite3.connect(tmp_path / f"events_{name}.db") as conn:
            assert conn.execute("SELECT count(*) FROM messages").fetchone() == (70,)
            assert conn.execute(
                "SELECT count(*) FROM events WHERE type = 'message.created'"
            ).fetchone() == (event_rows,)
