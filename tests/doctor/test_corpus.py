"""The doctor on real public schemas it did not design (tests/doctor/corpus/README.md).

For every corpus database:

- the findings are exactly the ones checked in (``expected-<dialect>.json``, each judged
  true or false by hand): a new finding fails (a false positive nobody reviewed), and so
  does a missing one; the per-check precision table is printed at the end of the run;
- every statement a finding suggests runs, as printed, on a copy;
- ``repair --apply`` on a copy keeps every table's rows, and the checksum of every column
  it does not say it changes; the application's normal writes still work afterwards; a
  second ``--apply`` is a no-op.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from noclash.doctor import diagnose, repair
from noclash.doctor.context import Options
from noclash.doctor.intent import KeySpec
from noclash.doctor.model import Finding
from tests.doctor.corpus import CORPUS, ENTRIES, Entry, libpq, statements
from tests.doctor.helpers import snapshot

CASES = [(name, d) for name, e in ENTRIES.items() for d in e.dialects]


def _key(f: Finding | dict) -> tuple:
    if isinstance(f, dict):
        return (f["check"], f["severity"], f["table"], tuple(f["columns"]))
    return (f.check, str(f.severity), f.table, f.columns)


def expected(name: str, dialect: str) -> dict:
    path = CORPUS / name / f"expected-{dialect}.json"
    return json.loads(path.read_text()) if path.is_file() else {"keys": [], "findings": []}


def options(name: str, dialect: str) -> Options:
    return Options(keys=tuple(KeySpec.parse(k) for k in expected(name, dialect)["keys"]))


class Copies:
    """Copies of one built corpus database (files for SQLite, templates for PostgreSQL)."""

    def __init__(self, url: str, pg_databases, tmp: Path) -> None:
        self.url, self.pg, self.tmp, self.n = url, pg_databases, tmp, 0

    def copy(self) -> str:
        self.n += 1
        if self.url.startswith("sqlite"):
            dest = self.tmp / f"copy{self.n}.db"
            shutil.copy(make_url(self.url).database, dest)
            return f"sqlite:///{dest}"
        return self.pg.create(template=make_url(self.url).database)


@pytest.fixture(scope="module")
def built(pg_databases, tmp_path_factory) -> dict[tuple[str, str], Copies]:
    out = {}
    for name, dialect in CASES:
        tmp = tmp_path_factory.mktemp(f"corpus-{name}-{dialect}")
        url = f"sqlite:///{tmp / 'corpus.db'}" if dialect == "sqlite" else pg_databases.create()
        ENTRIES[name].build(url)
        out[(name, dialect)] = Copies(url, pg_databases, tmp)
    return out


@pytest.mark.parametrize(("name", "dialect"), CASES)
def test_findings_are_the_reviewed_ones(
    name: str, dialect: str, built: dict, corpus_precision: dict
) -> None:
    url = built[(name, dialect)].url
    report = diagnose(url, options(name, dialect))
    reviewed = {_key(f): f for f in expected(name, dialect)["findings"]}
    found = {_key(f) for f in report.findings}
    for key in found:
        verdict = reviewed.get(key, {}).get("verdict", "new")
        corpus_precision.setdefault(key[0], []).append(verdict)
    new = found - set(reviewed)
    missed = set(reviewed) - found
    if os.environ.get("NOCLASH_CORPUS_DRAFT") and (new or missed):
        # Writes a draft to review by hand: each new finding needs a verdict and a why.
        path = CORPUS / name / f"expected-{dialect}.json"
        draft = {
            **expected(name, dialect),
            "findings": [
                reviewed.get(_key(f))
                or {
                    "check": f.check,
                    "severity": str(f.severity),
                    "table": f.table,
                    "columns": list(f.columns),
                    "verdict": "?",
                    "why": f.message,
                }
                for f in report.sorted()
            ],
        }
        path.write_text(json.dumps(draft, indent=2) + "\n")
    messages = {_key(f): f.message for f in report.findings}
    assert not new, "unreviewed findings (false positives?): " + json.dumps(
        [{"key": list(k), "message": messages[k]} for k in sorted(new, key=str)], indent=1
    )
    assert not missed, f"missed findings: {sorted(missed, key=str)}"


@pytest.mark.parametrize(("name", "dialect"), CASES)
def test_every_suggested_statement_runs(name: str, dialect: str, built: dict) -> None:
    copies: Copies = built[(name, dialect)]
    for f in diagnose(copies.url, options(name, dialect)).findings:
        url = copies.copy()
        try:
            statements(url, ";\n".join(f.fix.statements) + ";")
        except Exception as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"{f.check} on {f.location}: {exc}\n{f.fix.sql}") from exc
        finally:
            if dialect == "postgresql":
                copies.pg.drop(url)


@pytest.mark.parametrize(("name", "dialect"), CASES)
def test_repair_keeps_data_and_the_app_working(name: str, dialect: str, built: dict) -> None:
    copies: Copies = built[(name, dialect)]
    entry: Entry = ENTRIES[name]
    url = copies.copy()
    opts = options(name, dialect)
    try:
        before = snapshot(url)
        result = repair(url, opts, apply=True)
        after = snapshot(url)
        assert set(after) == set(before)
        changes = {(a.table, c) for a in result.actions for c in a.changes}
        for table, cols in before.items():
            assert after[table]["__rows__"] == cols["__rows__"], table
            for col, checksum in cols.items():
                if (table, col) not in changes:
                    assert after[table][col] == checksum, f"{table}.{col} changed"
        unfixed = {_key(f) for f in result.unfixed}
        reviewed_errors = {
            _key(f) for f in expected(name, dialect)["findings"] if f["severity"] == "error"
        }
        assert unfixed <= reviewed_errors
        statements(url, entry.writes_sql())
        again = repair(url, opts, apply=True)
        assert again.actions == []
    finally:
        if dialect == "postgresql":
            copies.pg.drop(url)


def test_corpus_is_documented() -> None:
    readme = (CORPUS / "README.md").read_text()
    for name in ENTRIES:
        assert f"## {name}" in readme, f"{name} is not described in corpus/README.md"


__all__ = ["libpq"]
