"""The benchmark harness at smoke size, so it cannot rot.

Every scenario runs on SQLite and on the suite's PostgreSQL server for a fraction of a
second per contender. Timings are not asserted (the machine is shared); the structure of
the output and the invariants are: noclash never errs, never stores a second active
conversation or a duplicate message, never sends a delivery twice or leaves one sent and
unrecorded, and every case reports every contender.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import Config, markdown_table  # noqa: E402
from bench.runner import run  # noqa: E402
from bench.scenarios import SCENARIOS  # noqa: E402


@pytest.fixture(scope="module")
def smoke(pg_server_url: str) -> tuple[list, dict]:
    config = Config.quick_size(writers=(1, 4))
    return run(config, pg_url=pg_server_url)


def test_every_scenario_runs_on_both_databases(smoke: tuple[list, dict]) -> None:
    results, _doc = smoke
    seen = {(r.scenario, r.dialect) for r in results}
    assert seen == {(s, d) for s in SCENARIOS for d in ("sqlite", "postgresql")}
    for case in results:
        roles = [c.role for c in case.contenders]
        assert "noclash" in roles
        if case.scenario != "stream":  # a latency: noclash alone
            assert "limit" in roles
        if case.scenario not in ("http", "stream", "events", "outbound"):
            assert "seed" in roles
        noclash = case.get("noclash")
        assert noclash is not None
        assert noclash.ratio_to_noclash == pytest.approx(1.0)
        for c in case.contenders:
            where = (case.scenario, case.dialect, case.writers, case.label, c.name)
            assert c.ops > 0, where
            assert c.ops_per_s > 0, where  # a window holds at least its first success
            assert c.p50_ms is not None and c.p99_ms is not None, where
            assert c.p50_ms <= c.p99_ms, where


def test_noclash_never_errs_nor_duplicates(smoke: tuple[list, dict]) -> None:
    results, _doc = smoke
    for case in results:
        noclash = case.get("noclash")
        assert noclash is not None
        assert noclash.errors == 0, (case.scenario, case.dialect, noclash.error_kinds)
        if case.scenario == "active":
            assert noclash.invariants == {"dup_active": 0, "dup_messages": 0}
            seed = case.get("seed")
            assert seed is not None and set(seed.invariants) == {"dup_active", "dup_messages"}
        if case.scenario == "outbound":
            assert noclash.invariants == {
                "dup_sends": 0, "unrecorded": 0, "unsettled": 0, "not_sent": 0, "starved_rounds": 0
            }


def test_statements_are_counted(smoke: tuple[list, dict]) -> None:
    results, _doc = smoke
    for case in results:
        for c in case.contenders:
            if case.scenario in ("http", "stream") or "over HTTP" in case.label or (
                case.scenario == "outbound" and c.role == "limit"
            ):  # the statements run in servers, or there are none
                assert c.statements_per_op is None
            elif case.scenario == "outbound":
                # Batched: a claim, a read and a settlement serve many deliveries each.
                assert c.statements_per_op is not None and 0 < c.statements_per_op <= 3
                kinds = c.statements_by_kind or {}
                assert set(kinds) == {"claim", "details", "settle", "other"}, kinds
                assert kinds["settle"] > 0  # a short window may hold no claim (claimed ahead)
            else:
                assert c.statements_per_op is not None and c.statements_per_op >= 1
        if case.scenario in ("tokens", "slugs", "active"):
            limit = case.get("limit")
            assert limit is not None and limit.statements_per_op == pytest.approx(1.0)
    slug_pg_fresh = next(
        r for r in results
        if r.scenario == "slugs" and r.dialect == "postgresql" and r.label == "K=0"
        and r.writers == 1
    )
    noclash = slug_pg_fresh.get("noclash")
    assert noclash is not None and noclash.statements_per_op == pytest.approx(1.0)


def test_json_and_markdown(smoke: tuple[list, dict], tmp_path: Path) -> None:
    results, doc = smoke
    text = json.dumps(doc, default=str)
    back = json.loads(text)
    assert {"machine", "config", "cases", "targets"} <= set(back)
    assert back["machine"]["nproc"] >= 1 and "postgresql" in back["machine"]
    assert back["targets"] and all({"target", "measured", "met"} <= set(t) for t in back["targets"])
    table = markdown_table(results)
    assert table.count("\n") == 2 + sum(len(r.contenders) for r in results)
