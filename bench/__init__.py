"""Benchmarks: noclash against the seeds' fixes and against a bare INSERT, side by side.

Run with ``noclash bench`` (or ``make bench``, or ``python -m bench``). Layout:

- :mod:`bench.harness`: rounds, alternation, timing, percentiles, statement counts, output;
- :mod:`bench.databases`: throwaway SQLite files and PostgreSQL databases;
- :mod:`bench.seeds`: the seeds' fixes re-written faithfully as contenders;
- :mod:`bench.scenarios`: tokens, slugs, active conversation, http, outbound;
- :mod:`bench.targets`: the issue's targets, checked against a run;
- :mod:`bench.load` and :mod:`bench.serve`: the separate processes of the http scenario;
- :mod:`bench.botapi` and :mod:`bench.dispatchers`: those of the outbound scenario.
"""

from bench.runner import main, run

__all__ = ["main", "run"]
