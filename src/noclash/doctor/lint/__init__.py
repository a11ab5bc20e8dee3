"""``noclash lint``: the doctor's knowledge applied to migration SQL before it runs.

The SQL is split into statements (comments, quotes and dollar quotes respected), each
with its line number, and walked in order so rules know whether a transaction is open and
which tables the file itself creates (building an index on a table created in the same
migration locks nothing anyone waits for). Rules live one per module in ``lint/rules``;
what they share is in :mod:`noclash.doctor.lint.statements`.
"""

from __future__ import annotations

import re
from pathlib import Path

from noclash.doctor.errors import CannotRead, DoctorError
from noclash.doctor.lint.rules import RULES
from noclash.doctor.lint.statements import NAME, State, Statement, table_name
from noclash.doctor.model import Report

_COPY_STDIN = re.compile(r"^COPY\b.*\bFROM\s+STDIN\b", re.I | re.S)
_COPY_END = re.compile(r"^\\\.[ \t]*\r?$", re.M)


def split(sql: str, file: str = "-") -> list[Statement]:
    """Statements of ``sql`` with the line each starts on."""
    out: list[Statement] = []
    buf: list[str] = []
    line, start = 1, None
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            continue
        if sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            line += sql.count("\n", i, j)
            i = j
            continue
        if ch in "'\"" or (ch == "$" and re.match(r"\$\w*\$", sql[i:])):
            if ch == "$":
                tag = re.match(r"\$\w*\$", sql[i:]).group(0)  # type: ignore[union-attr]
                j = sql.find(tag, i + len(tag))
                j = n if j < 0 else j + len(tag)
            else:
                j = i + 1
                while j < n:
                    if sql[j] == ch:
                        if j + 1 < n and sql[j + 1] == ch:
                            j += 2
                            continue
                        break
                    j += 1
                j = min(j + 1, n)
            if start is None:
                start = line
            buf.append(sql[i:j])
            line += sql.count("\n", i, j)
            i = j
            continue
        if ch == ";":
            text = "".join(buf).strip()
            if text:
                out.append(Statement(text, start or line, file))
            buf, start = [], None
            if _COPY_STDIN.match(text):
                # pg_dump's data follows, up to a line "\.": rows, not SQL (they were read
                # as statements, and the statement after them was lost in the last row).
                end = _COPY_END.search(sql, i + 1)
                j = n if end is None else end.end()
                line += sql.count("\n", i, j)
                i = j
                continue
        else:
            if start is None and not ch.isspace():
                start = line
            buf.append(ch)
        if ch == "\n":
            line += 1
        i += 1
    text = "".join(buf).strip()
    if text:
        out.append(Statement(text, start or line, file))
    return out


_CREATE_TABLE = re.compile(
    rf"^CREATE (?:UNLOGGED |TEMP(?:ORARY)? )?TABLE (?:IF NOT EXISTS )?({NAME})"
)


def lint_sql(sql: str, file: str = "-", exclude: tuple[str, ...] = ()) -> list:
    state = State()
    findings = []
    for stmt in split(sql, file):
        norm = stmt.normal
        if re.match(r"^(BEGIN|START TRANSACTION)\b", norm):
            state.in_transaction = True
        elif re.match(r"^(COMMIT|END|ROLLBACK)\b", norm) and "TO SAVEPOINT" not in norm:
            state.in_transaction = False
        for rule in RULES:
            if rule.ID not in exclude:
                findings.extend(rule.check(stmt, state))
        if m := _CREATE_TABLE.match(norm):
            state.created_tables.add(table_name(m.group(1)))
    return findings


def lint_files(files: list[Path], exclude: tuple[str, ...] = ()) -> Report:
    """Lint every file; unreadable files raise :class:`CannotRead` (exit code 2)."""
    unknown = set(exclude) - {r.ID for r in RULES}
    if unknown:
        raise DoctorError(f"--exclude names unknown lint rules: {', '.join(sorted(unknown))}")
    report = Report(tool="noclash lint", target=", ".join(str(f) for f in files), dialect=None)
    for path in files:
        try:
            sql = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CannotRead(f"cannot read {path}: {exc}") from exc
        report.findings.extend(lint_sql(sql, str(path), exclude))
    report.checks_run = [r.ID for r in RULES if r.ID not in exclude]
    return report


__all__ = ["RULES", "State", "Statement", "lint_files", "lint_sql", "split"]
