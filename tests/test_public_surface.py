"""The importable API stays small and honest (like httpx's test_exported_members)."""

from __future__ import annotations

import pathlib
import re

import noclash.unique


def test_unique_exports_are_sorted_and_real():
    names = noclash.unique.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(noclash.unique, name) is not None
    public = {n for n in dir(noclash.unique) if not n.startswith("_")}
    submodules = {"claim", "errors", "ids", "keys", "translate", "slugs", "idempotency"}
    assert public - (submodules - set(names)) == set(names)


def test_the_layering_contracts_are_kept(capsys):
    """The import-linter contracts in pyproject.toml (layers; unique and db know nothing of
    chat or HTTP; the doctor nothing of the application), checked on the import graph, so
    an indirect import breaks them too."""
    from importlinter.cli import lint_imports

    pyproject = pathlib.Path(__file__).parents[1] / "pyproject.toml"
    code = lint_imports(config_filenames=(str(pyproject),), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


def test_no_short_random_token_generator_in_the_code():
    """Seeds 000/001: short random strings as tokens. None may come back."""
    src = pathlib.Path(noclash.unique.__file__).parents[1]
    pattern = re.compile(r"token_urlsafe\(\s*\d|token_hex\(\s*\d|random\.choices?\(")
    offenders = [
        str(p.relative_to(src)) for p in src.rglob("*.py") if pattern.search(p.read_text())
    ]
    assert offenders == []


def test_the_asyncio_engine_is_a_runtime_dependency():
    """The dispatcher's PostgreSQL transactions run on SQLAlchemy's asyncio engine, which
    needs greenlet; SQLAlchemy 2.1 no longer installs it by itself, and in the suite a dev
    dependency (playwright) brings it, so only the declared requirement can tell that
    ``make run`` has it."""
    import tomllib

    from packaging.requirements import Requirement

    pyproject = pathlib.Path(__file__).parents[1] / "pyproject.toml"
    runtime = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    sqlalchemy = next(r for r in map(Requirement, runtime) if r.name.lower() == "sqlalchemy")
    assert "asyncio" in sqlalchemy.extras
