"""Problem types come from one registry (``api/problems.py``) and docs/api.md lists them all.

A client branches on a problem's ``type``: a type the code can answer that the docs do not
list, or a row of the docs for a type nothing answers, breaks the contract quietly. The
source is read as text, so a ``kind="..."`` spelled by hand anywhere in ``src/`` fails too.
"""

from __future__ import annotations

import re
from pathlib import Path

from noclash.api.problems import PROBLEM_BASE, ProblemType

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src" / "noclash"
REGISTRY = SRC / "api" / "problems.py"


def _sources() -> dict[Path, str]:
    return {path: path.read_text() for path in SRC.rglob("*.py") if path != REGISTRY}


def _documented() -> dict[str, int]:
    """``{type: status}`` from the table of the Errors section of docs/api.md."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, int] = {}
    for row in re.findall(r"^\| (\d{3}) \| ([^|]+) \|", section, flags=re.M):
        status, cell = int(row[0]), row[1]
        for name in re.findall(r"`([a-z-]+)`", cell):
            found[name] = status
    return found


def test_no_problem_type_is_spelled_by_hand():
    """Every ``kind=`` names a member; no type URI is built outside the registry."""
    offenders = []
    for path, text in _sources().items():
        rel = path.relative_to(SRC)
        offenders += [f"{rel}: kind={m}" for m in re.findall(r"\bkind=([\"'][^\"']*[\"'])", text)]
        if PROBLEM_BASE in text:
            offenders.append(f"{rel}: builds {PROBLEM_BASE}... itself")
    assert offenders == []


def test_every_member_named_in_the_code_exists_and_every_member_is_used():
    used = set()
    for text in _sources().values():
        used |= set(re.findall(r"\bProblemType\.([A-Z_]+)\b", text))
    members = {k.name for k in ProblemType}
    assert used - members == set(), "names that are not members"
    # A member nothing answers is a type documented for nothing. NOT_FOUND,
    # METHOD_NOT_ALLOWED and BAD_REQUEST are answered by name from the framework's status
    # (ProblemType.for_framework), besides any direct use.
    framework = {ProblemType.for_framework(s) for s in (400, 404, 405)}
    assert members - used - {k.name for k in framework if k} == set(), "members never answered"


def test_docs_list_every_problem_type_with_its_status():
    documented = _documented()
    assert {k.value: k.status for k in ProblemType} == documented


def test_framework_answers_are_typed_from_the_registry():
    assert ProblemType.for_framework(404) is ProblemType.NOT_FOUND
    assert ProblemType.for_framework(405) is ProblemType.METHOD_NOT_ALLOWED
    assert ProblemType.for_framework(400) is ProblemType.BAD_REQUEST
    assert ProblemType.for_framework(418) is None  # about:blank: nothing beyond the status
