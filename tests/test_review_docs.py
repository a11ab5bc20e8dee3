"""What the documentation says of settings, revisions and set-up agrees with the code.

A user reads ``docs/configuration.md`` to learn a setting's default and what it accepts;
one documented with a default the code does not have, bounds it does not enforce, or not
at all, is a setting that surprises in production. These are checked against
``noclash.config.Settings`` itself, not against a copy, so a new field or a changed bound
fails here until the table says so. ``tests/test_docs.py`` checks links and the CLI
reference; ``tests/test_problem_types.py`` the problem types of docs/api.md.
"""

from __future__ import annotations

import pathlib
import re

import pytest
from annotated_types import Ge, Gt, Le
from pydantic.fields import FieldInfo

from noclash.config import Settings
from noclash.db.migrate import head_revision

ROOT = pathlib.Path(__file__).parents[1]
CONFIGURATION = ROOT / "docs" / "configuration.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Variables configuration.md lists that are not settings of noclash (read by the test suite).
NOT_SETTINGS = {"NOCLASH_TEST_PG_URL"}
ROW = re.compile(r"^\| `(NOCLASH_[A-Z_]+)` \| ([^|]+) \| ([^|]+) \|", flags=re.M)


def _env(name: str) -> str:
    return f"NOCLASH_{name.upper()}"


def _table() -> dict[str, tuple[str, str]]:
    """``{variable: (default, bounds)}`` from the table of docs/configuration.md."""
    rows = ROW.findall(CONFIGURATION.read_text())
    table = {name: (default.strip(), bounds.strip()) for name, default, bounds in rows}
    assert len(table) == len(rows), "a variable has two rows"
    return table


def _bounds(field: FieldInfo) -> str | None:
    """How the table words a field's bounds (None: a string, worded freely)."""
    if field.annotation is bool:
        return "`on` or `off` (`1`/`0`, `true`/`false`)"
    low = high = None
    for item in field.metadata:
        if isinstance(item, Ge):
            low = f"at least {item.ge}"
        elif isinstance(item, Gt):
            low = f"more than {item.gt}"
        elif isinstance(item, Le):
            high = item.le
    if low is None and high is None:
        return None
    if high is None:
        return low
    if low is not None and low.startswith("at least "):
        return f"{low.removeprefix('at least ')} to {high}"
    return f"{low}, at most {high}"


def test_every_setting_has_one_row_and_every_row_is_a_setting():
    fields = {_env(name) for name in Settings.model_fields}
    documented = set(_table())
    assert fields - documented == set(), "settings docs/configuration.md does not list"
    assert documented - fields - NOT_SETTINGS == set(), "rows for settings that do not exist"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_the_documented_default_is_the_real_one(name: str):
    """The documented default, given as the variable's value, is the field's default:
    ``on`` for ``True``, ``10`` for ``10.0``, ``unset`` for ``None``."""
    field = Settings.model_fields[name]
    default, _ = _table()[_env(name)]
    if default == "unset":
        assert field.default is None, name
        return
    value = re.fullmatch(r"`([^`]*)`", default)
    assert value, f"{_env(name)}: default {default!r} is neither `value` nor unset"
    parsed = getattr(Settings(**{name: value.group(1)}), name)
    assert parsed == field.default, f"{_env(name)}: documented {default}, is {field.default!r}"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_the_documented_bounds_are_the_real_ones(name: str):
    expected = _bounds(Settings.model_fields[name])
    _, documented = _table()[_env(name)]
    if expected is not None:
        assert documented == expected, _env(name)


def test_other_pages_repeat_a_setting_with_its_real_default():
    """outbound.md (and any page) may repeat a setting in a table of its own: with the
    default configuration.md gives, never an older one."""
    defaults = {name: default for name, (default, _) in _table().items()}
    for page in PAGES:
        if page == CONFIGURATION:
            continue
        for name, default, _ in ROW.findall(page.read_text()):
            assert name in defaults, f"{page.name}: {name} is not a setting"
            assert default.strip() == defaults[name], f"{page.name}: {name}"


def _read_elsewhere() -> str:
    texts = []
    for folder in ("src", "tests", "bench", "examples"):
        texts += [p.read_text() for p in (ROOT / folder).rglob("*.py")]
    return "\n".join(texts)


def test_every_variable_the_docs_name_exists():
    """A ``NOCLASH_*`` name in the README or the docs is a setting, or a variable the
    tests, the benchmark, a CLI option or the example bot read: a misspelt one in an
    example silently does nothing where a user copies it. (A family written
    ``NOCLASH_BODY_*_TIMEOUT_SECONDS`` is skipped.)"""
    settings = {_env(name) for name in Settings.model_fields}
    elsewhere = _read_elsewhere()
    unknown = set()
    for page in PAGES:
        for name in re.findall(r"\bNOCLASH_[A-Z0-9_]*[A-Z0-9]\b(?![_*])", page.read_text()):
            if name not in settings and f'"{name}"' not in elsewhere:
                unknown.add(f"{page.relative_to(ROOT)}: {name}")
    assert unknown == set()


def test_documented_readiness_names_the_newest_migration():
    """Every ``/readyz`` answer shown ("migration": "0011") is the head revision: the
    examples are pasted from a real server, and a new migration makes them stale."""
    shown = {
        (page.name, revision)
        for page in PAGES
        for revision in re.findall(r'"migration": ?"(\w+)"', page.read_text())
    }
    assert shown, "the README shows a /readyz answer"
    assert {revision for _, revision in shown} == {head_revision()}, shown


def test_readme_opens_with_exactly_the_two_set_up_commands():
    """The first code block of the README is ``make run`` and ``make test``, nothing else:
    a third step there is one more a newcomer must get right before anything works."""
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```\w*\n(.*?)```", text, flags=re.S)
    assert first and first.start() < text.index("\n## ")
    commands = [line.split("#", 1)[0].strip() for line in first.group(1).splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]


# A default quoted in prose: "`NOCLASH_HEADER_TIMEOUT_SECONDS` (10 s", "(16 KiB", "(25, ...".
QUOTED = re.compile(r"`(NOCLASH_[A-Z_]+)` \((\d+(?:\.\d+)?)(?: (s|h|KiB|MiB|fields)\b)?")
UNITS = {None: 1, "fields": 1, "s": 1, "h": 3600, "KiB": 1024, "MiB": 1024 * 1024}


def test_defaults_quoted_in_prose_are_the_real_ones():
    """deployment.md, events.md and idempotency.md quote defaults beside the variable
    ("`NOCLASH_MAX_BODY_BYTES` (64 KiB"): each is the field's default, in its unit (a
    ``_MS`` setting quoted in seconds is converted)."""
    defaults = {_env(name): field.default for name, field in Settings.model_fields.items()}
    checked = 0
    for page in PAGES:
        for name, number, unit in QUOTED.findall(page.read_text()):
            value = float(number) * UNITS[unit or None]
            if name.endswith("_MS") and unit in ("s", "h"):
                value *= 1000
            assert name in defaults, f"{page.name}: {name} is not a setting"
            assert value == defaults[name], f"{page.name}: {name} ({number} {unit or ''})"
            checked += 1
    assert checked >= 20


def test_the_nginx_example_lets_through_what_noclash_accepts():
    """The nginx example's ``client_max_body_size``: the API's default body limit for the
    server, the webhooks' for ``location /webhooks/``. Smaller, nginx answers 413 to a
    Meta batch noclash would take (and Meta redelivers it forever)."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    nginx = re.search(r"```nginx\n(.*?)```", text, flags=re.S)
    assert nginx
    sizes = re.findall(r"client_max_body_size (\d+)([km]);", nginx.group(1))
    scale = {"k": 1024, "m": 1024 * 1024}
    in_bytes = [int(n) * scale[unit] for n, unit in sizes]
    fields = Settings.model_fields
    assert in_bytes == [fields["max_body_bytes"].default, fields["max_webhook_body_bytes"].default]
    assert "location /webhooks/ {" in nginx.group(1)
