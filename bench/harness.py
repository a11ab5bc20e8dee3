"""The measuring machinery: rounds, alternation, timing, percentiles, statements, output.

Why it is built this way:

- **Alternation.** Every contender of a case runs in the same process against the same
  database, one after another inside each round, and the order rotates from round to
  round. Drift on a shared 2-core machine (another test suite starting, a checkpoint, a
  CPU frequency change) then hits every contender alike instead of whichever ran last.
- **Median of rounds.** Throughput is the median of the per-round figures, so one
  disturbed round does not move the result; latencies are pooled over all rounds.
- **Paired ratios.** A contender's ratio to noclash is the median over rounds of its
  round's throughput divided by noclash's in the same round, not a ratio of medians: the
  two ran within a second of each other, so this machine's slow swings (a durable commit's
  latency moves by a third from one second to the next) cancel out of each pair.
- **Statements** are counted with SQLAlchemy's ``before_cursor_execute`` event on the
  contender's engines. Transaction control (``BEGIN IMMEDIATE`` on SQLite) is not counted:
  every contender pays it alike, and the question is how much uniqueness work a create does.
- **Invariants** (duplicate active conversations, duplicate messages) are read from the
  database after the case, outside the timed part, over everything the contender wrote.
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import event
from sqlalchemy.engine import Engine

# seed: a seed's code; noclash: the product; limit: what noclash is measured against;
# variant: noclash with one part turned off, shown beside them (no target reads it).
ROLES = ("seed", "noclash", "limit", "variant")


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """How big a run is. ``full()`` is ``make bench``; ``quick()`` is the smoke size."""

    rounds: int
    seconds: float  # time budget of one contender in one round
    max_ops: int  # op budget of one contender in one round (whichever ends first)
    warmup_ops: int
    writers: tuple[int, ...]
    burst_writers: int  # the "64 concurrent messages for one psid" case
    slug_ks: tuple[int, ...]
    http_max_requests: int
    # The outbound scenario: dispatcher processes (one case per count), and each round's
    # measuring window and the warm-up before it, in seconds (a round of dispatchers
    # needs connections opened and a claim made and settled before it measures anything).
    dispatchers: tuple[int, ...] = (1, 4)
    outbound_seconds: float = 1.5
    outbound_warmup: float = 0.5
    quick: bool = False
    # The PostgreSQL server's max_connections: while every contender's pool fits in it,
    # pools stay open from round to round and only the first round warms them up.
    max_connections: int | None = None

    @classmethod
    def full(cls, writers: Sequence[int] | None = None) -> Config:
        return cls(
            rounds=11,
            seconds=0.3,
            max_ops=20_000,
            warmup_ops=40,
            writers=tuple(writers or (1, 32)),
            burst_writers=64,
            slug_ks=(0, 1_000, 10_000),
            http_max_requests=20_000,
        )

    @classmethod
    def quick_size(cls, writers: Sequence[int] | None = None) -> Config:
        return cls(
            rounds=1,
            seconds=0.15,
            max_ops=30,
            warmup_ops=4,
            writers=tuple(writers or (1, 8)),
            burst_writers=16,
            slug_ks=(0, 100),
            http_max_requests=60,
            dispatchers=(1, 2),
            outbound_seconds=0.3,
            outbound_warmup=0.2,
            quick=True,
        )


# -- statement counting ----------------------------------------------------------------------


class StatementCounter:
    """Counts statements sent by the engines it is attached to (transaction control excluded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip()[:5].upper() in ("BEGIN", "COMMI", "ROLLB"):
            return
        with self._lock:
            self.count += 1

    def attach(self, engine: Engine) -> None:
        # Asked of the engine itself, not remembered by id(): a disposed engine's id can be
        # reused by the next case's engine, which would then go uncounted.
        if not event.contains(engine, "before_cursor_execute", self._count):
            event.listen(engine, "before_cursor_execute", self._count)

    def reset(self) -> int:
        with self._lock:
            value, self.count = self.count, 0
        return value


COUNTER = StatementCounter()


# -- contenders and cases --------------------------------------------------------------------


@dataclass
class RoundResult:
    """What one contender did in one round."""

    ok: int
    errors: int
    elapsed: float
    latencies_ns: list[int]
    statements: int | None = None
    error_kinds: Counter[str] = field(default_factory=Counter)
    late: int = 0  # succeeded after the round's deadline: done, but outside the window
    # The statements by what they were for, where a scenario tells them apart (outbound).
    statement_kinds: Counter[str] | None = None
    # CPU seconds the measured processes spent in the window, where a scenario measures it.
    cpu_seconds: float | None = None


Op = Callable[[int, int], None]  # (worker index, the worker's op sequence number)


@dataclass
class Contender:
    """One way of doing the scenario's create.

    ``op`` does one create (raising counts as an error). ``runner`` replaces the in-process
    thread driver (the http scenario measures in a separate load-generating process).
    ``before_round(phase)`` resets data that would otherwise drift; it runs before the
    warm-up and before the measured run, each time with a new phase number. ``check``
    returns invariant violations after the case.
    """

    name: str
    role: str
    op: Op | None = None
    runner: Callable[[int, float, int], RoundResult] | None = None
    engines: Sequence[Engine] = ()
    before_round: Callable[[int], None] | None = None
    check: Callable[[], dict[str, int]] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")


@dataclass(frozen=True)
class CaseSpec:
    """A configuration to measure; ``build`` sets up its databases and yields contenders."""

    scenario: str
    dialect: str
    writers: int
    label: str
    contenders: tuple[str, ...]
    build: Callable[[], AbstractContextManager[list[Contender]]]
    burst: bool = False


@dataclass
class ContenderResult:
    name: str
    role: str
    ops_per_s: float
    rounds_ops_per_s: list[float]
    p50_ms: float | None
    p99_ms: float | None
    ops: int
    errors: int
    error_kinds: dict[str, int]
    statements_per_op: float | None
    invariants: dict[str, int]
    ratio_to_noclash: float | None = None
    note: str = ""
    # statements_per_op split by kind, where the scenario tells them apart (outbound).
    statements_by_kind: dict[str, float] | None = None
    # CPU microseconds per successful op in the measured processes (outbound).
    cpu_us_per_op: float | None = None


@dataclass
class CaseResult:
    scenario: str
    dialect: str
    writers: int
    label: str
    contenders: list[ContenderResult]

    def get(self, role: str) -> ContenderResult | None:
        return next((c for c in self.contenders if c.role == role), None)


# -- the drivers -----------------------------------------------------------------------------


def _record_error(kinds: Counter[str], exc: BaseException) -> None:
    orig = getattr(exc, "orig", None)
    kinds[type(orig or exc).__name__] += 1


class _Tally:
    """What the writer threads of one round measured, merged under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[int] = []
        self.kinds: Counter[str] = Counter()
        self.ok = 0
        self.errors = 0
        self.late = 0
        # The earliest late success, (end, latency) in ns: the one a round with no
        # success in its window measures (see run_threads).
        self.first_late: tuple[int, int] | None = None

    def worker(self) -> _WorkerTally:
        return _WorkerTally(self)

    def result(self, elapsed: float) -> RoundResult:
        return RoundResult(
            self.ok, self.errors, elapsed, self.latencies, error_kinds=self.kinds, late=self.late
        )


class _WorkerTally:
    """One thread's own counts (no lock per op), merged into the round's at the end."""

    def __init__(self, into: _Tally) -> None:
        self.into = into
        self.latencies: list[int] = []
        self.kinds: Counter[str] = Counter()
        self.ok = 0
        self.errors = 0
        self.late = 0
        self.first_late: tuple[int, int] | None = None

    def timed(self, op: Op, w: int, seq: int, deadline_ns: int | None = None) -> None:
        """Run one op; a success that ends after ``deadline_ns`` is counted as late (the
        first one kept aside, see :func:`run_threads`)."""
        t = time.perf_counter_ns()
        try:
            op(w, seq)
        except Exception as exc:
            self.errors += 1
            _record_error(self.kinds, exc)
            return
        end = time.perf_counter_ns()
        if deadline_ns is not None and end > deadline_ns:
            self.late += 1
            if self.first_late is None:  # a thread's ops are sequential: its earliest
                self.first_late = (end, end - t)
            return
        self.ok += 1
        self.latencies.append(end - t)

    def merge(self) -> None:
        with self.into.lock:
            self.into.latencies.extend(self.latencies)
            self.into.ok += self.ok
            self.into.late += self.late
            self.into.errors += self.errors
            self.into.kinds.update(self.kinds)
            if self.first_late is not None and (
                self.into.first_late is None or self.first_late < self.into.first_late
            ):
                self.into.first_late = self.first_late


def _run(worker: Callable[[int], None], writers: int) -> None:
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_threads(op: Op, writers: int, seconds: float, max_ops: int) -> RoundResult:
    """``writers`` threads each call ``op`` until the time or op budget is spent.

    All threads start together from a barrier, so thread start-up is not measured. The
    round is a fixed window: throughput counts the ops that ended within ``seconds`` of the
    release, and ops still running at the deadline finish but count as late (unless none
    ended in time: then the window stretches to the first success, so a round always
    measures something, even a short one on a loaded machine). A thread
    stuck behind a lock at the end (SQLite's busy handler sleeps up to 100 ms at a time)
    would otherwise stretch the round and drag its figure down by chance. When the op
    budget ends the round first, the window ends with the last op.
    """
    tickets = itertools.count()
    tally = _Tally()
    state: dict[str, int] = {}

    def released() -> None:
        state["t0"] = time.perf_counter_ns()
        state["deadline"] = state["t0"] + int(seconds * 1e9)

    start = threading.Barrier(writers, action=released)

    def worker(w: int) -> None:
        mine = tally.worker()
        start.wait()
        deadline = state["deadline"]
        seq = 0
        while next(tickets) < max_ops and time.perf_counter_ns() < deadline:
            mine.timed(op, w, seq, deadline)
            seq += 1
        mine.merge()

    _run(worker, writers)
    end = min(time.perf_counter_ns(), state["deadline"])
    if tally.ok == 0 and tally.first_late is not None:
        # No success in the window: it stretches to the earliest one, which is measured.
        end, latency = tally.first_late
        tally.ok, tally.late = 1, tally.late - 1
        tally.latencies.append(latency)
    return tally.result((end - state["t0"]) / 1e9)


def run_bursts(op: Op, writers: int, seconds: float, max_ops: int) -> RoundResult:
    """Bursts: all ``writers`` threads call ``op`` at once, wait for each other, repeat.

    Used where the point is simultaneity (64 messages for one customer at the same
    instant); a barrier before every op keeps the threads from drifting apart.
    """
    tally = _Tally()
    state: dict[str, Any] = {"stop": False, "bursts": 0}

    def gate() -> None:
        now = time.perf_counter()
        if "t0" not in state:
            state["t0"] = now
            state["deadline"] = now + seconds
        elif now >= state["deadline"] or state["bursts"] * writers >= max_ops:
            state["stop"] = True
        state["bursts"] += 1

    barrier = threading.Barrier(writers, action=gate)

    def worker(w: int) -> None:
        mine = tally.worker()
        seq = 0
        while True:
            barrier.wait()
            if state["stop"]:
                break
            mine.timed(op, w, seq)
            seq += 1
        mine.merge()

    _run(worker, writers)
    return tally.result(time.perf_counter() - state["t0"])


def run_interleaved(
    contenders: Sequence[Contender], seconds: float, max_ops: int
) -> dict[str, RoundResult]:
    """One writer: the contenders take turns op by op, ``seconds`` each on average (every
    contender gets the same number of ops, so a slower one gets more of the time).

    The finest alternation there is: consecutive ops of two contenders are a millisecond
    apart, so this machine's swings (a durable commit's latency moves by a third from one
    second to the next) hit them alike. The order is shuffled every turn: an op pays for
    what the op before it did (on SQLite, a connection re-reads the pages another
    connection wrote), and in a fixed cycle one contender would always follow the same
    other one. A contender's throughput is its ops over the time spent in them; its
    statements are counted around each of its ops.
    """
    tallies = {c.name: _Tally() for c in contenders}
    workers = {name: tally.worker() for name, tally in tallies.items()}
    busy = dict.fromkeys(tallies, 0)
    statements = dict.fromkeys(tallies, 0)
    budget_ns = int(seconds * 1e9) * len(contenders)
    order = list(contenders)
    shuffle = random.Random(len(order)).shuffle
    seq = 0
    while seq < max_ops and sum(busy.values()) < budget_ns:
        shuffle(order)
        for c in order:
            assert c.op is not None
            COUNTER.reset()
            started = time.perf_counter_ns()
            workers[c.name].timed(c.op, 0, seq)
            busy[c.name] += time.perf_counter_ns() - started
            statements[c.name] += COUNTER.reset()
        seq += 1
    results = {}
    for c in contenders:
        workers[c.name].merge()
        result = tallies[c.name].result(busy[c.name] / 1e9)
        result.statements = statements[c.name] if c.engines else None
        results[c.name] = result
    return results


def _percentile(sorted_values: Sequence[int], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index] / 1e6


def _dispose_idle(engines: Sequence[Engine]) -> None:
    """Close pooled connections, so that contenders hold one pool at a time."""
    for engine in engines:
        engine.pool.dispose()


def _pools_fit(contenders: Sequence[Contender], max_connections: int | None) -> bool:
    """Whether every contender's PostgreSQL pool can stay open at once (a margin kept for
    the admin connections); SQLite has no server to run out of connections."""
    engines = {id(e): e for c in contenders for e in c.engines}.values()
    needed = sum(
        e.pool.size() + getattr(e.pool, "_max_overflow", 0)
        for e in engines
        if e.dialect.name == "postgresql"
    )
    return needed == 0 or (max_connections is not None and needed + 10 <= max_connections)


def run_case(
    spec: CaseSpec, config: Config, advance: Callable[[str], None] | None = None
) -> CaseResult:
    """Measure every contender of ``spec`` for ``config.rounds`` alternating rounds."""
    driver = run_bursts if spec.burst else run_threads
    with spec.build() as contenders:
        rounds: dict[str, list[RoundResult]] = {c.name: [] for c in contenders}
        keep_pools = _pools_fit(contenders, config.max_connections)
        if spec.writers == 1 and not spec.burst and all(c.op for c in contenders):
            _run_interleaved_rounds(spec, config, contenders, rounds, advance)
            return _case_result(spec, contenders, rounds)
        warm: set[str] = set()
        for r in range(config.rounds):
            shift = r % len(contenders)
            for c in contenders[shift:] + contenders[:shift]:
                for engine in c.engines:
                    COUNTER.attach(engine)
                if c.runner is not None:
                    if c.before_round is not None:
                        c.before_round(2 * r + 1)
                    result = c.runner(spec.writers, config.seconds, config.max_ops)
                else:
                    assert c.op is not None
                    if c.name not in warm:
                        # Warm-up: open the pool's connections and fill statement caches.
                        # ``before_round`` runs before it and again before the measured
                        # run (with another phase number), so both start from one state.
                        if c.before_round is not None:
                            c.before_round(2 * r)
                        driver(c.op, spec.writers, 30.0, max(config.warmup_ops, spec.writers))
                    if c.before_round is not None:
                        c.before_round(2 * r + 1)
                    COUNTER.reset()
                    result = driver(c.op, spec.writers, config.seconds, config.max_ops)
                    result.statements = COUNTER.reset() if c.engines else None
                if keep_pools:
                    warm.add(c.name)
                else:
                    _dispose_idle(c.engines)
                rounds[c.name].append(result)
                if advance is not None:
                    advance(f"{spec.scenario} {spec.dialect} w={spec.writers} {spec.label}")
        return _case_result(spec, contenders, rounds)


def _run_interleaved_rounds(
    spec: CaseSpec,
    config: Config,
    contenders: Sequence[Contender],
    rounds: dict[str, list[RoundResult]],
    advance: Callable[[str], None] | None,
) -> None:
    """One writer: every round interleaves the contenders op by op (:func:`run_interleaved`).
    ``before_round`` runs for each before the warm-up (first round) and before each round."""
    for engine in (e for c in contenders for e in c.engines):
        COUNTER.attach(engine)
    for c in contenders:
        assert c.op is not None
        if c.before_round is not None:
            c.before_round(0)
        run_threads(c.op, 1, 30.0, config.warmup_ops)
    for r in range(config.rounds):
        shift = r % len(contenders)
        order = list(contenders[shift:]) + list(contenders[:shift])
        for c in order:
            if c.before_round is not None:
                c.before_round(2 * r + 1)
        measured = run_interleaved(order, config.seconds, config.max_ops)
        for c in contenders:
            rounds[c.name].append(measured[c.name])
            if advance is not None:
                advance(f"{spec.scenario} {spec.dialect} w=1 {spec.label}")


def _case_result(
    spec: CaseSpec, contenders: Sequence[Contender], rounds: dict[str, list[RoundResult]]
) -> CaseResult:
    results = [_aggregate(c, rounds[c.name]) for c in contenders]
    noclash = next((c for c in results if c.role == "noclash"), None)
    if noclash is not None:
        for c in results:
            c.ratio_to_noclash = paired_ratio(c.rounds_ops_per_s, noclash.rounds_ops_per_s)
    return CaseResult(spec.scenario, spec.dialect, spec.writers, spec.label, results)


def paired_ratios(contender: Sequence[float], noclash: Sequence[float]) -> list[float]:
    """``contender[r] / noclash[r]`` for every round where noclash did work."""
    return [a / b for a, b in zip(contender, noclash, strict=True) if b > 0]


def paired_ratio(contender: Sequence[float], noclash: Sequence[float]) -> float | None:
    """The median of :func:`paired_ratios`: the figure the tables and targets use."""
    pairs = paired_ratios(contender, noclash)
    return statistics.median(pairs) if pairs else None


def quartiles(values: Sequence[float]) -> tuple[float, float] | None:
    """The first and third quartile: how far the rounds spread around the median."""
    if len(values) < 4:
        return None
    q1, _median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def _aggregate(c: Contender, rounds: list[RoundResult]) -> ContenderResult:
    per_round = [r.ok / r.elapsed if r.elapsed > 0 else 0.0 for r in rounds]
    latencies = sorted(itertools.chain.from_iterable(r.latencies_ns for r in rounds))
    ops = sum(r.ok + r.errors + r.late for r in rounds)
    kinds: Counter[str] = Counter()
    for r in rounds:
        kinds.update(r.error_kinds)
    stmts = [r.statements for r in rounds]
    per_op = (
        sum(s for s in stmts if s is not None) / ops
        if ops and all(s is not None for s in stmts)
        else None
    )
    by_kind: dict[str, float] | None = None
    if ops and rounds and all(r.statement_kinds is not None for r in rounds):
        kinds_total: Counter[str] = Counter()
        for r in rounds:
            kinds_total.update(r.statement_kinds or {})
        by_kind = {k: v / ops for k, v in kinds_total.items()}
    ok_total = sum(r.ok for r in rounds)
    cpu_per_op = (
        sum(r.cpu_seconds or 0.0 for r in rounds) / ok_total * 1e6
        if ok_total and rounds and all(r.cpu_seconds is not None for r in rounds)
        else None
    )
    return ContenderResult(
        name=c.name,
        role=c.role,
        ops_per_s=statistics.median(per_round) if per_round else 0.0,
        rounds_ops_per_s=per_round,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        ops=ops,
        errors=sum(r.errors for r in rounds),
        error_kinds=dict(kinds),
        statements_per_op=per_op,
        invariants=c.check() if c.check is not None else {},
        note=c.note,
        statements_by_kind=by_kind,
        cpu_us_per_op=cpu_per_op,
    )


def run_all(
    specs: Sequence[CaseSpec], config: Config, console: Console | None = None
) -> Iterator[CaseResult]:
    """Run every case under a progress bar (counted in contender-rounds)."""
    console = console or Console(stderr=True)
    total = sum(len(s.contenders) * config.rounds for s in specs)
    progress = Progress(
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task("starting", total=total)

        def advance(description: str) -> None:
            progress.update(task, advance=1, description=description)

        for i, spec in enumerate(specs, 1):
            progress.update(task, description=f"{spec.scenario} {spec.dialect} setup")
            started = time.perf_counter()
            result = run_case(spec, config, advance)
            if not console.is_terminal:
                # No live bar in a log: one line per case instead, so a long run shows life.
                console.print(
                    f"[{i}/{len(specs)}] {spec.scenario} {spec.dialect} w={spec.writers} "
                    f"{spec.label}: {time.perf_counter() - started:.1f} s",
                    highlight=False,
                )
            yield result


# -- output ----------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _violations(c: ContenderResult) -> str:
    bad = {k: v for k, v in c.invariants.items() if v}
    if not c.invariants:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in bad.items()) if bad else "0"


def results_table(results: Sequence[CaseResult], title: str = "noclash bench") -> Table:
    """The results as a rich table: one row per contender, grouped by case."""
    table = Table(title=title, show_lines=False)
    for name, justify in [
        ("scenario", "left"),
        ("db", "left"),
        ("w", "right"),
        ("case", "left"),
        ("contender", "left"),
        ("ops/s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("errors", "right"),
        ("violations", "left"),
        ("stmts/op", "right"),
        ("x noclash", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for case in results:
        for i, c in enumerate(case.contenders):
            first = i == 0
            table.add_row(
                case.scenario if first else "",
                case.dialect if first else "",
                str(case.writers) if first else "",
                case.label if first else "",
                c.name,
                f"{c.ops_per_s:,.0f}",
                _fmt(c.p50_ms, ".2f"),
                _fmt(c.p99_ms, ".2f"),
                str(c.errors),
                _violations(c),
                _fmt(c.statements_per_op, ".2f"),
                _fmt(c.ratio_to_noclash, ".2f"),
                end_section=i == len(case.contenders) - 1,
            )
    return table


def markdown_table(results: Sequence[CaseResult]) -> str:
    """The same table as Markdown, for docs/performance.md."""
    head = (
        "| scenario | db | writers | case | contender | ops/s | p50 ms | p99 ms | errors "
        "| violations | stmts/op | x noclash |\n"
        "|---|---|--:|---|---|--:|--:|--:|--:|---|--:|--:|\n"
    )
    rows = []
    for case in results:
        for c in case.contenders:
            rows.append(
                f"| {case.scenario} | {case.dialect} | {case.writers} | {case.label} | "
                f"{c.name} | {c.ops_per_s:,.0f} | {_fmt(c.p50_ms, '.2f')} | "
                f"{_fmt(c.p99_ms, '.2f')} | {c.errors} | {_violations(c)} | "
                f"{_fmt(c.statements_per_op, '.2f')} | {_fmt(c.ratio_to_noclash, '.2f')} |"
            )
    return head + "\n".join(rows) + "\n"


def to_json(
    results: Sequence[CaseResult],
    *,
    config: Config,
    machine: dict[str, Any],
    targets: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "machine": machine,
        "config": asdict(config),
        "cases": [asdict(r) for r in results],
        "targets": list(targets),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
